/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * check_abi.c - builds golden vIR values in C with vir_abi.h only, and prints their bytes.
 *
 * Compiled and run by the vir-spec test `c_header_builds_the_golden_vectors` (spec/tests/c_check.rs)
 * with `cc -std=c11 -Wall -Wextra -Werror -pedantic -I abi/include -I spec/c`. The test compares
 * every printed line with the Rust encoding of the same value and with the golden vector of the
 * same name in spec/vectors/ (the values below are those of the vector files).
 *
 * Output, one line per value:
 *     <name> <bytes as hex, memory order, no separators>
 *     status <value> <errno> <name>      for every status and one unknown value
 */
#include <stdio.h>
#include <string.h>

#include "vir_abi.h"
#include "check_layout.h"

static void print_bytes(const char *name, const void *p, size_t len)
{
	const unsigned char *b = p;
	size_t i;

	printf("%s ", name);
	for (i = 0; i < len; i++)
		printf("%02x", b[i]);
	printf("\n");
}

/* The x86 binding is little-endian, so a uint64_t in memory is its little-endian encoding. */
static void print_irte(const char *name, uint64_t lo, uint64_t hi)
{
	struct vir_irte128 e;

	e.lo = lo;
	e.hi = hi;
	print_bytes(name, &e, sizeof(e));
}

static void print_msi(const char *name, uint32_t address_lo, uint32_t address_hi, uint32_t data)
{
	uint32_t m[3];

	m[0] = address_lo;
	m[1] = address_hi;
	m[2] = data;
	print_bytes(name, m, sizeof(m));
}

/* Scenario of the vectors: device 01:03.0 (requester id 0x0118), MSI-X entry 7, allocation
 * handle 0x00010003 whose physical IRTE is 0x1234, guest x2APIC id 0x102, vector 0x45. */
#define RID       0x0118u
#define HANDLE    0x00010003u
#define IRTE_IDX  0x1234u
#define APIC_ID   0x102u
#define VECTOR    0x45u

static void wire_structs(void)
{
	struct vir_allocate_request alloc;
	struct vir_activate_request act;
	struct vir_activate_response resp;
	struct vir_doorbell_block db;

	memset(&alloc, 0, sizeof(alloc));
	alloc.device_id = RID;
	alloc.kind = VIR_STORAGE_MSIX;
	alloc.log2_count = 0;
	alloc.index = 7;
	print_bytes("allocate_request", &alloc, sizeof(alloc));

	memset(&act, 0, sizeof(act));
	act.handle = HANDLE;
	act.subhandle = 0;
	act.flags = 0;
	act.target.apic_id = APIC_ID;
	act.target.vector = VECTOR;
	print_bytes("activate_request", &act, sizeof(act));

	memset(&resp, 0, sizeof(resp));
	resp.address_lo = VIR_MSI_ADDRESS_BASE |
			  ((IRTE_IDX << VIR_VTD_MSI_ADDR_HANDLE_14_0_SHIFT) & VIR_VTD_MSI_ADDR_HANDLE_14_0_MASK) |
			  VIR_VTD_MSI_ADDR_REMAPPABLE_MASK | VIR_VTD_MSI_ADDR_SHV_MASK;
	resp.address_hi = 0;
	resp.data = 0;
	resp.format = VIR_MESSAGE_FORMAT_VTD_REMAPPABLE;
	print_bytes("activate_response", &resp, sizeof(resp));

	memset(&db, 0, sizeof(db));
	db.call = VIR_CALL_ACTIVATE;
	db.status = VIR_STATUS_SUCCESS;
	db.request_gpa = UINT64_C(0x12345000);
	db.request_len = VIR_CALL_ACTIVATE_REQUEST_LEN;
	db.response_len = VIR_CALL_ACTIVATE_RESPONSE_LEN;
	db.response_gpa = UINT64_C(0x12345040);
	print_bytes("doorbell_block", &db, sizeof(db));
}

static void hardware_formats(void)
{
	uint32_t handle = IRTE_IDX;
	uint64_t pda = UINT64_C(0x123456780);
	uint32_t apic = 0x1234;
	uint64_t lo, hi;

	/* VT-d remappable MSI, handle 0x1234, SHV = 1, sub-handle 0. */
	print_msi("vtd_remappable_msi_shv",
		  VIR_MSI_ADDRESS_BASE |
			  (((handle & 0x7fffu) << VIR_VTD_MSI_ADDR_HANDLE_14_0_SHIFT) &
			   VIR_VTD_MSI_ADDR_HANDLE_14_0_MASK) |
			  (((handle >> 15) << VIR_VTD_MSI_ADDR_HANDLE_15_SHIFT) & VIR_VTD_MSI_ADDR_HANDLE_15_MASK) |
			  VIR_VTD_MSI_ADDR_SHV_MASK | VIR_VTD_MSI_ADDR_REMAPPABLE_MASK,
		  0, 0);

	/* Compatibility format, APIC id 0x1234 with the extended destination ID, vector 0x20. */
	print_msi("compat_msi_ext_dest",
		  VIR_MSI_ADDRESS_BASE |
			  (((apic & 0xffu) << VIR_MSI_ADDR_DEST_ID_SHIFT) & VIR_MSI_ADDR_DEST_ID_MASK) |
			  (((apic >> 8) << VIR_MSI_ADDR_EXT_DEST_ID_SHIFT) & VIR_MSI_ADDR_EXT_DEST_ID_MASK),
		  0,
		  (0x20u << VIR_MSI_DATA_VECTOR_SHIFT) | (VIR_MSI_DELIVERY_FIXED << VIR_MSI_DATA_DELIVERY_MODE_SHIFT));

	/* VT-d remapped IRTE, x2APIC: present, vector 0x45, DST 0x102, SVT = 1, SQ = 0, SID = RID. */
	lo = VIR_VTD_IRTE_REMAPPED_LO_PRESENT_MASK |
	     ((uint64_t)VECTOR << VIR_VTD_IRTE_REMAPPED_LO_VECTOR_SHIFT) |
	     ((uint64_t)APIC_ID << VIR_VTD_IRTE_REMAPPED_LO_DST_SHIFT);
	hi = ((uint64_t)RID << VIR_VTD_IRTE_REMAPPED_HI_SID_SHIFT) |
	     ((uint64_t)VIR_VTD_SVT_VERIFY_SID << VIR_VTD_IRTE_REMAPPED_HI_SVT_SHIFT);
	print_irte("vtd_irte_remapped_x2apic", lo, hi);

	/* VT-d posted IRTE: present, IM = 1, guest vector 0x51, PDA 0x123456780, SVT = 1, SID = RID. */
	lo = VIR_VTD_IRTE_POSTED_LO_PRESENT_MASK | VIR_VTD_IRTE_POSTED_LO_IM_MASK |
	     ((uint64_t)0x51 << VIR_VTD_IRTE_POSTED_LO_VECTOR_SHIFT) |
	     ((((pda & UINT64_C(0xffffffff)) >> 6) << VIR_VTD_IRTE_POSTED_LO_PDA_31_6_SHIFT) &
	      VIR_VTD_IRTE_POSTED_LO_PDA_31_6_MASK);
	hi = ((uint64_t)RID << VIR_VTD_IRTE_POSTED_HI_SID_SHIFT) |
	     ((uint64_t)VIR_VTD_SVT_VERIFY_SID << VIR_VTD_IRTE_POSTED_HI_SVT_SHIFT) |
	     ((pda >> 32) << VIR_VTD_IRTE_POSTED_HI_PDA_63_32_SHIFT);
	print_irte("vtd_irte_posted", lo, hi);

	/* Posted-interrupt descriptor: vectors 0x45 and 0xEF pending, ON, NV 0xF2, NDST 0x102. */
	{
		struct vir_pi_desc d;

		memset(&d, 0, sizeof(d));
		d.pir[0x45 / 64] |= UINT64_C(1) << (0x45 % 64);
		d.pir[0xEF / 64] |= UINT64_C(1) << (0xEF % 64);
		d.notifications = VIR_PI_DESC_NOTIFICATIONS_ON_MASK;
		d.nv = 0xF2;
		d.ndst = APIC_ID;
		print_bytes("posted_descriptor", &d, sizeof(d));
	}

	/* AMD-Vi 128-bit IRTE, remapped: RemapEn, destination 0x12345678, vector 0x45. */
	lo = VIR_AMD_IRTE128_REMAP_LO_REMAP_EN_MASK |
	     ((UINT64_C(0x12345678) & 0xffffffu) << VIR_AMD_IRTE128_REMAP_LO_DESTINATION_23_0_SHIFT);
	hi = ((uint64_t)VECTOR << VIR_AMD_IRTE128_REMAP_HI_VECTOR_SHIFT) |
	     ((UINT64_C(0x12345678) >> 24) << VIR_AMD_IRTE128_REMAP_HI_DESTINATION_31_24_SHIFT);
	print_irte("amd_irte_128", lo, hi);

	/* AMD-Vi 32-bit IRTE: RemapEn, fixed, destination 3, vector 0x45. */
	{
		uint32_t e = VIR_AMD_IRTE32_REMAP_EN_MASK |
			     (VIR_AMD_INT_TYPE_FIXED << VIR_AMD_IRTE32_INT_TYPE_SHIFT) |
			     (3u << VIR_AMD_IRTE32_DESTINATION_SHIFT) | (VECTOR << VIR_AMD_IRTE32_VECTOR_SHIFT);
		print_bytes("amd_irte_32", &e, sizeof(e));
	}

	/* AMD-Vi MSI for IRTE index 0x123. */
	print_msi("amd_msi", VIR_AMD_MSI_ADDRESS, 0, 0x123u & VIR_AMD_MSI_DATA_INDEX_MASK);

	/* AMD-Vi MSI for IRTE index 0x345: 0x200 and up need DM (address bit 2). */
	print_msi("amd_msi_2k_dm", VIR_AMD_MSI_ADDRESS | VIR_AMD_MSI_ADDR_DM_MASK, 0,
		  0x345u & VIR_AMD_MSI_DATA_INDEX_MASK);

	/* QEMU's x2APIC high-address form: APIC id 0x1234, vector 0x45, level asserted. */
	print_msi("compat_msi_x2apic_hi",
		  VIR_MSI_ADDRESS_BASE |
			  (((0x1234u & 0xffu) << VIR_MSI_ADDR_DEST_ID_SHIFT) & VIR_MSI_ADDR_DEST_ID_MASK),
		  0x1234u & VIR_MSI_ADDRESS_HI_DEST_MASK,
		  (0x45u << VIR_MSI_DATA_VECTOR_SHIFT) | VIR_MSI_DATA_LEVEL_ASSERT_MASK);
}

static void statuses(void)
{
	uint32_t s;

	for (s = 0; s <= VIR_STATUS_COUNT; s++) {
		const char *name = vir_status_name(s);

		printf("status %u %d %s\n", (unsigned)s, vir_status_errno(s), name ? name : "-");
	}
}

int main(void)
{
	wire_structs();
	hardware_formats();
	statuses();
	return 0;
}

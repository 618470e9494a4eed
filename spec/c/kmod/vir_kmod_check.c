// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * vir_kmod_check.c - vir_abi.h included by a Linux kernel module.
 *
 * Built (never loaded) by the vir-spec test `header_builds_in_a_kernel_module`
 * (spec/tests/c_portability.rs) with `make -C <kernel headers> M=<dir> W=1 modules`; the test
 * fails on any compiler warning. Under __KERNEL__ the header takes its types from
 * <linux/types.h> and has no libc dependency; the header's static assertions check every
 * structure's layout with the kernel's compiler flags.
 */
#include <linux/module.h>
#include <linux/kvm_host.h>
#include <linux/vfio.h>

#include "vir_abi.h"

static int __init vir_kmod_check_init(void)
{
	struct vir_pi_desc desc = { .nv = 0x42 };

	pr_info("vir: %s %d %u\n", vir_status_name(VIR_STATUS_SUCCESS),
		vir_status_errno(VIR_STATUS_UNKNOWN_CALL), desc.nv);
	return 0;
}

static void __exit vir_kmod_check_exit(void)
{
}

module_init(vir_kmod_check_init);
module_exit(vir_kmod_check_exit);
MODULE_DESCRIPTION("vIR header build check");
MODULE_LICENSE("Dual MIT/GPL");

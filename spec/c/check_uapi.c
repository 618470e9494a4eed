/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * check_uapi.c - vir_abi.h next to the Linux UAPI headers a VMM includes (kvm.h, vfio.h),
 * before and after them, in strict C11.
 *
 * Compiled by the vir-spec test `header_compiles_with_linux_uapi_headers`
 * (spec/tests/c_portability.rs) twice, with and without -DVIR_UAPI_AFTER, with
 * `cc -std=c11 -Wall -Wextra -Werror -pedantic -I abi/include`.
 */
#ifdef VIR_UAPI_AFTER
#include "vir_abi.h"
#include <linux/kvm.h>
#include <linux/vfio.h>
#else
#include <linux/kvm.h>
#include <linux/vfio.h>
#include "vir_abi.h"
#endif

#include <stdio.h>

int main(void)
{
	struct kvm_msi msi = { 0 };
	struct vir_activate_request req = { 0 };

	msi.address_lo = VIR_MSI_ADDRESS_BASE;
	req.handle = 1;
	printf("%u %u %d\n", msi.address_lo, (unsigned)req.handle,
	       vir_status_errno(VIR_STATUS_SUCCESS));
	return 0;
}

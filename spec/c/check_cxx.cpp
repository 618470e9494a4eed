// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// check_cxx.cpp - vir_abi.h included unchanged by a C++ translation unit.
//
// Compiled and run by the vir-spec test `header_compiles_as_cxx17` (spec/tests/c_portability.rs)
// with `c++ -std=c++17 -Wall -Wextra -Werror -pedantic -I abi/include`. The header's own
// static assertions check every structure's size and offsets in C++ too; the program prints a
// few values that the test compares with the Rust abi.
#include <cstdio>

#include "vir_abi.h"

int main()
{
	vir_pi_desc desc{};
	desc.nv = 0x42;
	std::printf("pi_desc_size %zu\n", sizeof(vir_pi_desc));
	std::printf("pi_desc_align %zu\n", alignof(vir_pi_desc));
	std::printf("irte128_size %zu\n", sizeof(vir_irte128));
	std::printf("activate_request_size %zu\n", sizeof(vir_activate_request));
	std::printf("page_size %u\n", VIR_PAGE_SIZE);
	std::printf("errno_unknown_call %d\n", vir_status_errno(VIR_STATUS_UNKNOWN_CALL));
	std::printf("name_success %s\n", vir_status_name(VIR_STATUS_SUCCESS));
	std::printf("nv %u\n", static_cast<unsigned>(desc.nv));
	return 0;
}

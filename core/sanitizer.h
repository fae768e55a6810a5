#pragma once

// FLOWGRAD_UNDER_ADDRESS_SANITIZER is defined when this translation unit is
// built with AddressSanitizer. GCC says so with __SANITIZE_ADDRESS__; clang 14
// only through __has_feature. Internal: not installed with the public headers.
#if defined(__SANITIZE_ADDRESS__)
#define FLOWGRAD_UNDER_ADDRESS_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FLOWGRAD_UNDER_ADDRESS_SANITIZER 1
#endif
#endif

#include "core/version.h"  // generated in the build tree

namespace flowgrad {

const char* version() { return FLOWGRAD_VERSION_STRING; }

}  // namespace flowgrad

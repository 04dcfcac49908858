// Every header that the kernel loops (cpu/*_kernels.inc) use. The files that compile those loops
// for a wider instruction set include this first, then switch the target: functions defined in
// headers must stay baseline code, because other translation units compile them too and the linker
// keeps a single copy, which would then be the AVX one on every path.
#pragma once

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cpu/cpu_common.h"
#include "cpu/kernels.h"
#include "paanet_math.h"
#include "stable_api.h"

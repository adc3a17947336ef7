/* Debian's OpenBLAS (CBLAS interface) and LAPACKE, for the Swift core. */
#include <cblas.h>
#include <lapacke.h>

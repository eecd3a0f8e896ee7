// The system zlib (Debian: zlib1g-dev), for gzip'd initramfs archives and, later, qcow2.
#include <zlib.h>

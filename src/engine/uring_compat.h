/* uring_compat.h - what liburing 2.3 (Debian 12) lacks and uring.c uses.
 *
 * The kernel may be far newer than the liburing headers.  Values here come
 * from the kernel's <linux/io_uring.h>; each is used only after probing for
 * it (feature bits, opcode probe, or trying and checking for EINVAL), never
 * after a kernel version check.  Keep this header small: raw constants only,
 * and only those uring.c actually uses.
 */
#ifndef FERRY_ENGINE_URING_COMPAT_H
#define FERRY_ENGINE_URING_COMPAT_H

/* liburing 2.3's inline helpers trip -Wshadow/-Wsign-conversion style
 * warnings on some compilers; they are not ours to fix. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#include <liburing.h>
#pragma GCC diagnostic pop

/* params.features bits newer than liburing 2.3; only printed by the probe. */
#ifndef IORING_FEAT_REG_REG_RING
#define IORING_FEAT_REG_REG_RING (1U << 13)
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14)
#endif

/* Set by liburing on the internal timeout SQE it adds when the kernel lacks
 * IORING_FEAT_EXT_ARG; such a CQE belongs to no socket. */
#ifndef LIBURING_UDATA_TIMEOUT
#define LIBURING_UDATA_TIMEOUT ((__u64)-1)
#endif

#endif

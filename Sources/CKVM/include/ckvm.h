// CKVM: the C view of <linux/kvm.h> that Swift cannot import by itself.
//
// Swift imports KVM's structs directly, but not the function-like ioctl
// macros (_IOW(...)), C variadic ioctl(2), or the anonymous unions inside
// struct kvm_run. This header supplies exactly those three things and
// nothing else: request numbers as constants, a non-variadic ioctl, and
// small accessors for kvm_run's exit payloads. No logic lives here.
#ifndef CKVM_H
#define CKVM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>

#pragma clang assume_nonnull begin

// MARK: - ioctl

static inline int ckvm_ioctl(int fd, unsigned long request, void *_Nullable argument) {
  return ioctl(fd, request, argument);
}

static inline int ckvm_ioctl_value(int fd, unsigned long request, unsigned long argument) {
  return ioctl(fd, request, argument);
}

// MARK: - Request numbers

// System (/dev/kvm)
static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long CKVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;

// VM
static const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
static const unsigned long CKVM_IOEVENTFD = KVM_IOEVENTFD;
static const unsigned long CKVM_IRQFD = KVM_IRQFD;
static const unsigned long CKVM_SET_GSI_ROUTING = KVM_SET_GSI_ROUTING;
static const unsigned long CKVM_SIGNAL_MSI = KVM_SIGNAL_MSI;
static const unsigned long CKVM_GET_DIRTY_LOG = KVM_GET_DIRTY_LOG;
static const unsigned long CKVM_ENABLE_CAP = KVM_ENABLE_CAP;
static const unsigned long CKVM_GET_IRQCHIP = KVM_GET_IRQCHIP;
static const unsigned long CKVM_SET_IRQCHIP = KVM_SET_IRQCHIP;
static const unsigned long CKVM_GET_PIT2 = KVM_GET_PIT2;
static const unsigned long CKVM_SET_PIT2 = KVM_SET_PIT2;
static const unsigned long CKVM_GET_CLOCK = KVM_GET_CLOCK;
static const unsigned long CKVM_SET_CLOCK = KVM_SET_CLOCK;

// vCPU
static const unsigned long CKVM_RUN = KVM_RUN;
static const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
static const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
static const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long CKVM_GET_FPU = KVM_GET_FPU;
static const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
static const unsigned long CKVM_GET_MSRS = KVM_GET_MSRS;
static const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long CKVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
static const unsigned long CKVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS;
static const unsigned long CKVM_GET_MP_STATE = KVM_GET_MP_STATE;
static const unsigned long CKVM_SET_MP_STATE = KVM_SET_MP_STATE;
static const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;
static const unsigned long CKVM_TRANSLATE = KVM_TRANSLATE;
static const unsigned long CKVM_GET_XSAVE = KVM_GET_XSAVE;
static const unsigned long CKVM_GET_XSAVE2 = KVM_GET_XSAVE2;
static const unsigned long CKVM_SET_XSAVE = KVM_SET_XSAVE;
static const unsigned long CKVM_GET_XCRS = KVM_GET_XCRS;
static const unsigned long CKVM_SET_XCRS = KVM_SET_XCRS;
static const unsigned long CKVM_GET_DEBUGREGS = KVM_GET_DEBUGREGS;
static const unsigned long CKVM_SET_DEBUGREGS = KVM_SET_DEBUGREGS;
static const unsigned long CKVM_KVMCLOCK_CTRL = KVM_KVMCLOCK_CTRL;

// MARK: - Sizes of structs that end in flexible arrays

static const size_t CKVM_CPUID2_HEADER_SIZE = offsetof(struct kvm_cpuid2, entries);
static const size_t CKVM_MSRS_HEADER_SIZE = offsetof(struct kvm_msrs, entries);
static const size_t CKVM_MSR_LIST_HEADER_SIZE = offsetof(struct kvm_msr_list, indices);
static const size_t CKVM_IRQ_ROUTING_HEADER_SIZE = offsetof(struct kvm_irq_routing, entries);

// MARK: - kvm_run accessors (the exit payloads live in an anonymous union)

static inline uint32_t ckvm_exit_reason(const struct kvm_run *run) { return run->exit_reason; }

static inline void ckvm_set_immediate_exit(struct kvm_run *run, uint8_t value) {
  __atomic_store_n(&run->immediate_exit, value, __ATOMIC_SEQ_CST);
}

// KVM_EXIT_IO
static inline uint8_t ckvm_io_direction(const struct kvm_run *run) { return run->io.direction; }
static inline uint8_t ckvm_io_size(const struct kvm_run *run) { return run->io.size; }
static inline uint16_t ckvm_io_port(const struct kvm_run *run) { return run->io.port; }
static inline uint32_t ckvm_io_count(const struct kvm_run *run) { return run->io.count; }
static inline uint64_t ckvm_io_data_offset(const struct kvm_run *run) { return run->io.data_offset; }

// KVM_EXIT_MMIO
static inline uint64_t ckvm_mmio_address(const struct kvm_run *run) { return run->mmio.phys_addr; }
static inline uint32_t ckvm_mmio_length(const struct kvm_run *run) { return run->mmio.len; }
static inline uint8_t ckvm_mmio_is_write(const struct kvm_run *run) { return run->mmio.is_write; }
static inline uint8_t *ckvm_mmio_data(struct kvm_run *run) { return run->mmio.data; }

// KVM_EXIT_FAIL_ENTRY
static inline uint64_t ckvm_fail_entry_reason(const struct kvm_run *run) {
  return run->fail_entry.hardware_entry_failure_reason;
}

// KVM_EXIT_INTERNAL_ERROR (and its emulation_failure overlay)
static inline uint32_t ckvm_internal_suberror(const struct kvm_run *run) { return run->internal.suberror; }
static inline uint32_t ckvm_internal_ndata(const struct kvm_run *run) { return run->internal.ndata; }
static inline uint64_t ckvm_internal_data(const struct kvm_run *run, uint32_t index) {
  return index < 16 ? run->internal.data[index] : 0;
}
static inline uint64_t ckvm_emulation_failure_flags(const struct kvm_run *run) {
  return run->emulation_failure.ndata >= 3 ? run->emulation_failure.flags : 0;
}
static inline uint8_t ckvm_emulation_failure_insn_size(const struct kvm_run *run) {
  return run->emulation_failure.insn_size;
}
static inline const uint8_t *ckvm_emulation_failure_insn_bytes(const struct kvm_run *run) {
  return run->emulation_failure.insn_bytes;
}

// KVM_EXIT_SYSTEM_EVENT
static inline uint32_t ckvm_system_event_type(const struct kvm_run *run) { return run->system_event.type; }

// MARK: - The vCPU kick signal

/// The real-time signal SwiftKVM uses to kick a vCPU thread out of KVM_RUN.
/// SIGRTMIN is a function call in glibc, so Swift cannot import it.
static inline int ckvm_kick_signal(void) { return SIGRTMIN + 4; }

/// Installs the (empty) handler for the kick signal, process-wide.
int ckvm_install_kick_handler(void);

/// Unblocks the kick signal in the calling thread (each vCPU thread calls it).
int ckvm_unblock_kick_signal(void);

/// Names the calling thread (at most 15 bytes are kept), for ps and debuggers.
int ckvm_set_thread_name(const char *name);

/// The calling thread's Linux thread id (what QEMU reports as a vCPU's thread-id).
int ckvm_thread_id(void);

#pragma clang assume_nonnull end

#endif

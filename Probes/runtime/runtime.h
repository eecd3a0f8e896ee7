// The probe-guest runtime: what every probe can call.
//
// A probe defines `int main(unsigned cpu_count)`, which runs at CPL3 with every
// I/O port granted (IOPL=3 and an all-zero TSS I/O bitmap), natively on PVM
// hosts, where ring-0 code is emulated. Returning 0 means success. Output goes to COM1; the verdict to the debug-exit port 0xF4.
#ifndef PROBE_RUNTIME_H
#define PROBE_RUNTIME_H

#include <stdint.h>

#define RUNTIME_MAX_CPUS 8
#define RUNTIME_EXIT_EXCEPTION 0x7f

int main(unsigned cpu_count);
/// Runs on each application processor at CPL3 once it is up (optional).
void ap_main(unsigned cpu_index);
/// Runs at CPL0 on the boot CPU before it drops to CPL3 (optional).
void kernel_prelude(void);
/// Handles #BP (int3) and returns to the instruction after it (optional; without it #BP is fatal).
void breakpoint_hook(void);
/// Handles interrupt vector RUNTIME_INTERRUPT_VECTOR at CPL0 (optional). A probe that defines
/// it runs its CPL3 code with interrupts enabled; the hook must send the local APIC its EOI.
void interrupt_hook(void);
#define RUNTIME_INTERRUPT_VECTOR 64
#define RUNTIME_LOCAL_APIC 0xfee00000ull

// Port I/O (allowed at CPL3 because IOPL=3).
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

// MMIO.
static inline void mmio_write8(uint64_t a, uint8_t v) { *(volatile uint8_t *)a = v; }
static inline void mmio_write16(uint64_t a, uint16_t v) { *(volatile uint16_t *)a = v; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline void mmio_write64(uint64_t a, uint64_t v) { *(volatile uint64_t *)a = v; }
static inline uint8_t mmio_read8(uint64_t a) { return *(volatile uint8_t *)a; }
static inline uint16_t mmio_read16(uint64_t a) { return *(volatile uint16_t *)a; }
static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t *)a; }
static inline uint64_t mmio_read64(uint64_t a) { return *(volatile uint64_t *)a; }

static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

// COM1 output (polls LSR before each byte, as a real driver must).
void print(const char *text);
void print_hex(uint64_t value);
void print_dec(uint64_t value);

/// Prints "PASS name" or "FAIL name" and counts failures; returns `ok`.
int check(int ok, const char *name);
/// The number of failed checks so far.
unsigned failures(void);

/// Stops the machine through the debug-exit port: skvm exits with (code << 1) | 1.
void probe_exit(uint32_t code) __attribute__((noreturn));

/// Wakes every application processor with INIT/SIPI/SIPI through the local APIC;
/// returns how many CPUs (including this one) reported in within the time allowed.
unsigned start_application_processors(void);

/// The CPUs that have reached CPL3 so far (the boot CPU counts as one).
extern volatile unsigned runtime_cpus_online;

void *memset(void *d, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);

#endif

// Probe runtime: per-CPU setup at CPL0 (GDT, TSS, IDT), the CPL3 start, COM1
// output, checks, the debug-exit verdict and INIT/SIPI bring-up.
#include "runtime.h"

#define COM1 0x3f8
#define DEBUG_EXIT_PORT 0xf4
#define LOCAL_APIC 0xfee00000ull
#define KERNEL_STACK_SIZE (1u << 14)
#define TSS_SELECTOR(index) (0x30 + 16 * (index))
#define AP_TRAMPOLINE_VECTOR 0x11 /* ap_trampoline sits at 0x11000 */

struct __attribute__((packed)) tss64 {
  uint32_t reserved0;
  uint64_t rsp[3];
  uint64_t reserved1;
  uint64_t ist[7];
  uint64_t reserved2;
  uint16_t reserved3;
  uint16_t io_map_base;
  uint8_t io_bitmap[8192 + 1]; /* all zero: every port allowed; the last byte must be 0xff */
};

struct __attribute__((packed)) descriptor_pointer {
  uint16_t limit;
  uint64_t base;
};

struct idt_gate {
  uint16_t offset_low;
  uint16_t selector;
  uint8_t ist;
  uint8_t type_attributes;
  uint16_t offset_middle;
  uint32_t offset_high;
  uint32_t reserved;
};

struct exception_frame {
  uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
  uint64_t vector, error_code, rip, cs, rflags, rsp, ss;
};

extern uint64_t runtime_gdt[];
extern char runtime_gdt_end[];
extern char kernel_stacks[];
extern uint64_t runtime_cpu_count;
extern const uint64_t exception_stubs[32];
extern const uint64_t interrupt_stub;
void runtime_load_segments(void);
void runtime_enter_user(unsigned index) __attribute__((noreturn));

static struct tss64 tss[RUNTIME_MAX_CPUS];
static struct idt_gate idt[RUNTIME_INTERRUPT_VECTOR + 1] __attribute__((aligned(16)));
/// RFLAGS for CPL3: IOPL=3, and IF only for probes that handle interrupts.
uint64_t runtime_user_rflags = 0x3002;
volatile unsigned runtime_cpus_online;
static volatile unsigned serial_lock;
static volatile unsigned failed_checks;

__attribute__((weak)) void ap_main(unsigned cpu_index) { (void)cpu_index; }
__attribute__((weak)) void kernel_prelude(void) {}
__attribute__((weak)) void breakpoint_hook(void);
__attribute__((weak)) void interrupt_hook(void);

void *memset(void *d, int c, unsigned long n) {
  unsigned char *p = d;
  while (n--) *p++ = (unsigned char)c;
  return d;
}

void *memcpy(void *d, const void *s, unsigned long n) {
  unsigned char *p = d;
  const unsigned char *q = s;
  while (n--) *p++ = *q++;
  return d;
}

// MARK: CPU setup (CPL0)

static void build_idt(void) {
  if (interrupt_hook) runtime_user_rflags = 0x3202;
  for (int vector = 0; vector <= RUNTIME_INTERRUPT_VECTOR; vector++) {
    if (vector >= 32 && vector < RUNTIME_INTERRUPT_VECTOR) continue;
    uint64_t handler = vector < 32 ? exception_stubs[vector] : interrupt_stub;
    idt[vector].offset_low = (uint16_t)handler;
    idt[vector].selector = 0x18;
    idt[vector].ist = 0;
    idt[vector].type_attributes = 0x8e; /* present, DPL0, 64-bit interrupt gate */
    idt[vector].offset_middle = (uint16_t)(handler >> 16);
    idt[vector].offset_high = (uint32_t)(handler >> 32);
    idt[vector].reserved = 0;
  }
}

void runtime_cpu_init(unsigned index) {
  if (index == 0) build_idt();
  struct tss64 *t = &tss[index];
  memset(t, 0, sizeof *t);
  t->rsp[0] = (uint64_t)(kernel_stacks + (index + 1) * KERNEL_STACK_SIZE);
  /* Ports are granted to CPL3 through the I/O bitmap, not only IOPL=3: PVM hosts
     clear IOPL when the guest returns to ring 3, but honour the bitmap. */
  t->io_map_base = __builtin_offsetof(struct tss64, io_bitmap);
  t->io_bitmap[8192] = 0xff;

  uint64_t base = (uint64_t)t, limit = sizeof *t - 1;
  uint64_t *descriptor = &runtime_gdt[TSS_SELECTOR(index) / 8];
  descriptor[0] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) | (((limit >> 16) & 0xf) << 48) |
                  (((base >> 24) & 0xff) << 56);
  descriptor[1] = base >> 32;

  struct descriptor_pointer gdtr = {(uint16_t)(runtime_gdt_end - (char *)runtime_gdt - 1), (uint64_t)runtime_gdt};
  struct descriptor_pointer idtr = {sizeof idt - 1, (uint64_t)idt};
  __asm__ volatile("lgdt %0" ::"m"(gdtr));
  runtime_load_segments();
  __asm__ volatile("ltr %w0" ::"r"((uint16_t)TSS_SELECTOR(index)));
  __asm__ volatile("lidt %0" ::"m"(idtr));
}

// MARK: CPL3 start

__attribute__((noreturn)) void runtime_user_start(unsigned index) {
  __atomic_add_fetch(&runtime_cpus_online, 1, __ATOMIC_SEQ_CST);
  if (index == 0) {
    int code = main((unsigned)runtime_cpu_count);
    if (code != 0) {
      print("probe: main returned ");
      print_dec((uint64_t)code);
      print("\n");
    }
    probe_exit((uint32_t)code);
  }
  ap_main(index);
  for (;;) cpu_relax(); /* parked until the boot CPU ends the run */
}

// MARK: Output

static void lock_serial(void) {
  while (__atomic_exchange_n(&serial_lock, 1, __ATOMIC_ACQUIRE)) cpu_relax();
}

static void unlock_serial(void) { __atomic_store_n(&serial_lock, 0, __ATOMIC_RELEASE); }

static void put_byte(char c) {
  while (!(inb(COM1 + 5) & 0x20)) cpu_relax();
  outb(COM1, (uint8_t)c);
}

static void print_unlocked(const char *text) {
  while (*text) put_byte(*text++);
}

void print(const char *text) {
  lock_serial();
  print_unlocked(text);
  unlock_serial();
}

void print_hex(uint64_t value) {
  char buffer[19] = "0x";
  int length = 2;
  int started = 0;
  for (int shift = 60; shift >= 0; shift -= 4) {
    unsigned digit = (value >> shift) & 0xf;
    if (digit || started || shift == 0) {
      buffer[length++] = "0123456789abcdef"[digit];
      started = 1;
    }
  }
  buffer[length] = 0;
  print(buffer);
}

void print_dec(uint64_t value) {
  char buffer[21];
  int length = 20;
  buffer[length] = 0;
  do {
    buffer[--length] = (char)('0' + value % 10);
    value /= 10;
  } while (value);
  print(buffer + length);
}

int check(int ok, const char *name) {
  lock_serial();
  print_unlocked(ok ? "PASS " : "FAIL ");
  print_unlocked(name);
  print_unlocked("\n");
  unlock_serial();
  if (!ok) __atomic_add_fetch(&failed_checks, 1, __ATOMIC_SEQ_CST);
  return ok;
}

unsigned failures(void) { return failed_checks; }

void probe_exit(uint32_t code) {
  outl(DEBUG_EXIT_PORT, code);
  for (;;) cpu_relax();
}

void runtime_exception(struct exception_frame *frame) {
  if (frame->vector == RUNTIME_INTERRUPT_VECTOR && interrupt_hook) {
    interrupt_hook();
    return;
  }
  if (frame->vector == 3 && breakpoint_hook) {
    breakpoint_hook(); /* #BP is a trap: RIP already points after the int3 */
    return;
  }
  /* The faulting code may hold the serial lock: take it over rather than wait. */
  __atomic_store_n(&serial_lock, 0, __ATOMIC_RELEASE);
  print("\nprobe: exception ");
  print_dec(frame->vector);
  print(" at rip ");
  print_hex(frame->rip);
  print(" error ");
  print_hex(frame->error_code);
  print(" cs ");
  print_hex(frame->cs);
  print(" rflags ");
  print_hex(frame->rflags);
  print("\n");
  probe_exit(RUNTIME_EXIT_EXCEPTION);
}

// MARK: SMP

static uint64_t read_tsc(void) {
  uint32_t low, high;
  __asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
  return ((uint64_t)high << 32) | low;
}

static void send_ipi(unsigned apic_id, uint32_t command) {
  mmio_write32(LOCAL_APIC + 0x310, apic_id << 24);
  mmio_write32(LOCAL_APIC + 0x300, command);
  while (mmio_read32(LOCAL_APIC + 0x300) & (1u << 12)) cpu_relax(); /* delivery pending */
}

unsigned start_application_processors(void) {
  unsigned count = (unsigned)runtime_cpu_count;
  if (count > RUNTIME_MAX_CPUS) count = RUNTIME_MAX_CPUS;
  mmio_write32(LOCAL_APIC + 0xf0, 0x1ff); /* spurious vector register: APIC on */
  for (unsigned id = 1; id < count; id++) {
    send_ipi(id, 0x4500);                        /* INIT, level assert */
    send_ipi(id, 0x4600 | AP_TRAMPOLINE_VECTOR); /* STARTUP */
    send_ipi(id, 0x4600 | AP_TRAMPOLINE_VECTOR); /* STARTUP, again, as the MP spec asks */
  }
  uint64_t deadline = read_tsc() + 20000000000ull; /* ~10 s on any plausible TSC */
  while (runtime_cpus_online < count && read_tsc() < deadline) cpu_relax();
  return runtime_cpus_online;
}

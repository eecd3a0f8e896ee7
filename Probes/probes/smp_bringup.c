// Wakes every application processor with INIT/SIPI/SIPI through the in-kernel
// local APIC; each reports its APIC id from CPL3. Passes when all CPUs report.
#include "runtime.h"

static volatile uint32_t reported_apic_ids;

/* The local APIC's ID register. (CPUID's initial APIC id is no use here: PVM
   hosts pass that field through from whichever physical CPU runs the vCPU.) */
static unsigned local_apic_id(void) { return mmio_read32(0xfee00020) >> 24; }

void ap_main(unsigned cpu_index) {
  unsigned id = local_apic_id();
  print("cpu ");
  print_dec(cpu_index);
  print(" online, APIC id ");
  print_dec(id);
  print("\n");
  __atomic_or_fetch(&reported_apic_ids, 1u << id, __ATOMIC_SEQ_CST);
}

int main(unsigned cpu_count) {
  __atomic_or_fetch(&reported_apic_ids, 1u << local_apic_id(), __ATOMIC_SEQ_CST);
  unsigned online = start_application_processors();
  uint32_t expected = cpu_count >= 32 ? 0xffffffffu : (1u << cpu_count) - 1;
  while (reported_apic_ids != expected && online == cpu_count) cpu_relax();
  print("online ");
  print_dec(online);
  print(" of ");
  print_dec(cpu_count);
  print("\n");
  check(online == cpu_count, "every vCPU reached CPL3");
  check(reported_apic_ids == expected, "every APIC id reported once");
  return failures() ? 1 : 0;
}

// The raw /dev/kvm floor: the least a VMM can do to run the benchmark guest.
// One VM, one vCPU, no devices: COM1 bytes go to stdout, the i8042 reset ends
// the run, every other exit is ignored. With --irqchip it also creates the
// in-kernel irqchip and PIT, as every real VMM (skvm, QEMU) does: KVM then does
// more work on each entry, which is the kernel's cost, not the VMM's.
// Usage: floor [--irqchip] GUEST.bin
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEMORY_SIZE (16 << 20)

static void die(const char *what) {
  perror(what);
  exit(1);
}

int main(int argc, char **argv) {
  int irqchip = argc == 3 && strcmp(argv[1], "--irqchip") == 0;
  if (argc != 2 + irqchip) {
    fprintf(stderr, "usage: %s [--irqchip] GUEST.bin\n", argv[0]);
    return 2;
  }
  const char *guest = argv[argc - 1];
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("/dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  unsigned char *memory = mmap(NULL, MEMORY_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (memory == MAP_FAILED) die("mmap");
  int image = open(guest, O_RDONLY);
  if (image < 0) die(guest);
  if (read(image, memory + 0x10000, MEMORY_SIZE - 0x10000) <= 0) die("read");
  struct kvm_userspace_memory_region region = {0, 0, 0, MEMORY_SIZE, (unsigned long)memory};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
  if (irqchip) {
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
    if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0) die("KVM_CREATE_PIT2");
  }
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) die("mmap kvm_run");
  struct kvm_sregs sregs;
  ioctl(vcpu, KVM_GET_SREGS, &sregs);
  struct kvm_segment *segments[] = {&sregs.cs, &sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss};
  for (int i = 0; i < 6; i++) {
    segments[i]->base = 0x10000;
    segments[i]->selector = 0x1000;
  }
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
  struct kvm_regs regs = {.rip = 0, .rsp = 0x8000, .rflags = 2};
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
    if (run->exit_reason != KVM_EXIT_IO) {
      fprintf(stderr, "floor: exit reason %u\n", run->exit_reason);
      return 3;
    }
    unsigned char *data = (unsigned char *)run + run->io.data_offset;
    if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0x3f8) {
      if (write(1, data, 1) < 0) die("write");
    } else if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0x64 && *data == 0xfe) {
      return 0;
    }
  }
}

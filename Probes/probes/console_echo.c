// Serial console input from a probe: prints a prompt, then echoes each line it receives on
// COM1 back as "echo: LINE" (polling the line status register, with a pause between polls so
// an idle guest makes few exits). The line "quit" ends it with status 0.
#include "runtime.h"

static void put_char(char c) {
  char text[2] = {c, 0};
  print(text);
}

int main(unsigned cpu_count) {
  (void)cpu_count;
  print("echo: ready\n");
  char line[128];
  unsigned length = 0;
  for (;;) {
    if (!(inb(0x3FD) & 1)) {
      for (volatile unsigned spin = 0; spin < 2000000; spin++) cpu_relax();
      continue;
    }
    char c = (char)inb(0x3F8);
    if (c == '\r' || c == '\n') {
      if (length == 0) continue;
      line[length] = 0;
      if (length == 4 && line[0] == 'q' && line[1] == 'u' && line[2] == 'i' && line[3] == 't') return 0;
      print("echo: ");
      print(line);
      print("\n");
      length = 0;
    } else if (length < sizeof(line) - 1) {
      line[length++] = c;
    } else {
      put_char('!');
    }
  }
}

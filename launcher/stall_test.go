package launcher

import (
	"bytes"
	"strings"
	"testing"
)

// stalledConsole is the console of a real run whose guest stalled (TCG,
// QEMU 7.2, 2026-12-06): CPU 0 stopped getting timer interrupts early in
// boot, and the agent never came.
const stalledConsole = `[   23.733196] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[   23.734670] rcu: 	0-...!: (0 ticks this GP) idle=c128/0/0x0 softirq=42/42 fqs=0 (false positive?)
[   23.737003] rcu: rcu_preempt kthread timer wakeup didn't happen for 5254 jiffies! g-1151 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402
[   23.737003] rcu: 	Possible timer handling issue on cpu=0 timer-softirq=6
[   23.737003] rcu: rcu_preempt kthread starved for 5255 jiffies! g-1151 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402 ->cpu=0
`

func TestStallWatcher(t *testing.T) {
	tests := []struct {
		name    string
		console string
		chunk   int // bytes per write; 0: all at once
		want    string
	}{
		{"an RCU stall, said once", stalledConsole + stalledConsole, 0, "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"},
		{"the line split across writes", stalledConsole, 7, "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"},
		{"a soft lockup", "[ 52.1] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [sh:77]\n", 0, "watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [sh:77]"},
		{"a hung task", "[ 242.5] INFO: task mount:91 blocked for more than 120 seconds.\n", 3, "INFO: task mount:91 blocked for more than 120 seconds."},
		{"a normal boot says nothing", "[ 0.1] rcu: Hierarchical SRCU implementation.\n[ 0.2] rcu: \tMax phase no-delay instances is 400.\nsonix-test: starting the agent\n", 0, ""},
		{"a marker past the bound of a line is not read", strings.Repeat("x", maxStallLine) + " soft lockup - CPU#0\n", 0, ""},
		{"an unfinished line is not read", "rcu: INFO: rcu_preempt detected stalls on CPUs", 0, ""},
		{"control characters stay off the terminal", "\x1b[2J\x1b]0;owned\x07 soft lockup - CPU#0 stuck\n", 0, `\x1b[2J\x1b]0;owned\a soft lockup - CPU#0 stuck`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			w := &stallWatcher{msgs: newMessages(&out, true, false)}
			in := []byte(tt.console)
			step := tt.chunk
			if step == 0 {
				step = len(in)
			}
			for len(in) > 0 {
				k := min(step, len(in))
				if n, err := w.Write(in[:k]); n != k || err != nil {
					t.Fatalf("Write = %d, %v; want %d, nil (the console copy must never stop)", n, err, k)
				}
				in = in[k:]
			}
			got := out.String()
			if tt.want == "" {
				if got != "" {
					t.Errorf("said %q for a console without a stall", got)
				}
				return
			}
			if strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "sonix-run: the guest's kernel reports a stall") || !strings.Contains(got, tt.want) {
				t.Errorf("said %q\nwant one line quoting %q", got, tt.want)
			}
			if strings.ContainsAny(got, "\x1b\x07") {
				t.Errorf("a control character reached the terminal: %q", got)
			}
		})
	}
}

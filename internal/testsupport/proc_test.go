package testsupport

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	for _, c := range []struct {
		name, line, comm string
		cpu              time.Duration
		bad              bool
	}{
		{"plain", "4242 (postgres) S 1 4242 4242 0 -1 4194560 532 0 0 0 150 25 0 0 20 0 1 0 100 1000 10 0 0", "postgres", 1750 * time.Millisecond, false},
		{"name with spaces and parentheses", "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1", "a (b) c", 70 * time.Millisecond, false},
		{"truncated", "7 (x) R 1 7", "", 0, true},
		{"no name", "7 x R 1", "", 0, true},
		{"bad times", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 u s 0 0 20 0 1 0 1 1 1", "", 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			comm, cpu, err := parseStat([]byte(c.line))
			if c.bad {
				if err == nil {
					t.Fatalf("parseStat(%q) = %q, %v; want an error", c.line, comm, cpu)
				}
				return
			}
			if err != nil || comm != c.comm || cpu != c.cpu {
				t.Fatalf("parseStat(%q) = %q, %v, %v; want %q, %v", c.line, comm, cpu, err, c.comm, c.cpu)
			}
		})
	}
}

// The test's own process: its CPU time grows while it computes, and
// CPUTimes finds it by its command name.
func TestCPUTimeOfThisProcess(t *testing.T) {
	pid := os.Getpid()
	before, err := CPUTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	x := uint64(1)
	for start := time.Now(); time.Since(start) < 300*time.Millisecond; {
		x = x*6364136223846793005 + 1442695040888963407
	}
	after, err := CPUTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 100*time.Millisecond {
		t.Fatalf("300 ms of computing (%d) added %v of CPU time", x, after-before)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	self := strings.TrimSpace(string(comm))
	all, err := CPUTimes(self)
	if err != nil {
		t.Fatal(err)
	}
	if all[self][pid] < after {
		t.Fatalf("CPUTimes(%q) has %v for this process (%d), CPUTime %v", comm, all[self][pid], pid, after)
	}
	if d := ReadCPU(t, map[string]int{"self": pid}).Since(CPUUse{"self": {pid: before}})["self"]; d < after-before {
		t.Fatalf("Since = %v, want at least %v", d, after-before)
	}
}

package testsupport

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PeakRSS returns the peak resident set size (VmHWM) of the running
// process pid, in bytes. Read from /proc it is the process's own peak; the
// rusage a parent gets when it waits for a child is not, since it can carry
// the parent's peak over the exec.
func PeakRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read status of process %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmHWM %q of process %d: %w", v, pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in the status of process %d", pid)
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat: clock ticks of
// USER_HZ, which Linux fixes at 100 a second for every architecture it
// exports them on.
const userHZ = 100

// CPUTime returns the CPU time, user and system, the running process pid
// has used so far.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat of process %d: %w", pid, err)
	}
	_, d, err := parseStat(b)
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	return d, nil
}

// CPUTimes returns the CPU time used so far by each running process whose
// command name is one of comms (as in /proc/<pid>/comm, e.g. "postgres"),
// by command name and PID, from one pass over /proc. Processes that end
// between two calls take their time with them: compare two calls over a
// span in which the processes of interest keep running.
func CPUTimes(comms ...string) (map[string]map[int]time.Duration, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out := make(map[string]map[int]time.Duration, len(comms))
	for _, c := range comms {
		out[c] = map[int]time.Duration{}
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // it ended meanwhile
		}
		name, d, err := parseStat(b)
		if err != nil || out[name] == nil {
			continue
		}
		out[name][pid] = d
	}
	return out, nil
}

// parseStat returns the command name and the user plus system CPU time of
// a /proc/<pid>/stat line. The name, in parentheses, may itself hold
// spaces and parentheses, so the fields are counted after its last ')'.
func parseStat(b []byte) (string, time.Duration, error) {
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, fmt.Errorf("malformed stat %q", s)
	}
	// After the name: state(3) ppid(4) ... utime(14) stime(15).
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return "", 0, fmt.Errorf("malformed stat %q", s)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, fmt.Errorf("malformed stat times %q %q", f[11], f[12])
	}
	return s[open+1 : end], time.Duration(ut+st) * time.Second / userHZ, nil
}

// CPUUse is the CPU time processes have used so far, by part (a service,
// or a process a benchmark names) and PID.
type CPUUse map[string]map[int]time.Duration

// ReadCPU returns the CPU time used so far by the services' processes
// ("postgres": every process of the server; "redis") and by the processes
// procs names, by part; it fails tb if one cannot be read. A benchmark
// compares two readings (CPUUse.Since) to tell what its work cost them.
func ReadCPU(tb testing.TB, procs map[string]int) CPUUse {
	tb.Helper()
	ts, err := CPUTimes("postgres", "redis-server")
	if err != nil {
		tb.Fatal(err)
	}
	for comm, pids := range ts {
		if len(pids) == 0 {
			tb.Fatalf("no %s process running", comm)
		}
	}
	u := CPUUse{"postgres": ts["postgres"], "redis": ts["redis-server"]}
	for part, pid := range procs {
		t, err := CPUTime(pid)
		if err != nil {
			tb.Fatal(err)
		}
		u[part] = map[int]time.Duration{pid: t}
	}
	return u
}

// Since returns the CPU time each part of u used since before, an earlier
// reading; a process, or a part, new since then counts whole.
func (u CPUUse) Since(before CPUUse) map[string]time.Duration {
	out := map[string]time.Duration{}
	for part, now := range u {
		for pid, t := range now {
			out[part] += t - before[part][pid]
		}
	}
	return out
}

// ReportCPU reports the CPU time of each of parts per message, as
// "<part>-cpu-us/msg", and their sum's share of all the machine's cores
// over took, as "cpu-share"; it returns the same for a log line.
func ReportCPU(b *testing.B, cpu map[string]time.Duration, parts []string, msgs float64, took time.Duration) string {
	var all time.Duration
	var each []string
	for _, part := range parts {
		all += cpu[part]
		us := float64(cpu[part].Microseconds()) / msgs
		each = append(each, fmt.Sprintf("%s %.1f", part, us))
		b.ReportMetric(us, part+"-cpu-us/msg")
	}
	share := all.Seconds() / (took.Seconds() * float64(runtime.NumCPU()))
	b.ReportMetric(share, "cpu-share")
	return fmt.Sprintf("CPU per message (µs): %s; together %.0f%% of the machine's %d cores",
		strings.Join(each, ", "), 100*share, runtime.NumCPU())
}

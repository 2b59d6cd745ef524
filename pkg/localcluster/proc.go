package localcluster

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pollInterval paces every wait for a process or a file.
const pollInterval = 50 * time.Millisecond

// lock takes dir's lock file without waiting; ok is false when another
// process holds it. The lock lasts until the file is closed or its holder
// exits, however it exits.
func lock(dir string) (f *os.File, ok bool, err error) {
	f, err = os.OpenFile(lockPath(dir), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("lock %s: %w", lockPath(dir), err)
	}
	return f, true, nil
}

// locked reports whether a supervisor holds dir's lock, that is, whether a
// cluster is up there.
func locked(dir string) (bool, error) {
	if _, err := os.Stat(lockPath(dir)); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	f, ok, err := lock(dir)
	if err != nil {
		return false, err
	}
	if ok {
		f.Close()
	}
	return !ok, nil
}

func lockPath(dir string) string { return dir + string(os.PathSeparator) + lockFile }

// startTicks is pid's start time in clock ticks since boot, field 22 of
// /proc/PID/stat; 0 where there is no /proc.
func startTicks(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing parenthesis, where field 3 starts.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	const field = 22 - 3
	if len(f) <= field {
		return 0
	}
	v, err := strconv.ParseUint(f[field], 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// alive reports whether p still runs as the process state.json recorded:
// the pid exists, is not a zombie, and has the recorded start time.
func alive(p Proc) bool {
	if p.PID <= 0 {
		return false
	}
	if err := syscall.Kill(p.PID, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/stat")
	if err != nil {
		return !procExists() // no /proc here: trust kill(0)
	}
	if s := string(b); strings.LastIndexByte(s, ')') > 0 {
		if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 && f[0] == "Z" {
			return false
		}
	}
	return p.StartTicks == 0 || startTicks(p.PID) == p.StartTicks
}

func procExists() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// signalGroup sends sig to p's process group (each child of the
// supervisor leads its own), falling back to the process alone.
func signalGroup(p Proc, sig syscall.Signal) {
	if !alive(p) {
		return
	}
	if err := syscall.Kill(-p.PID, sig); err != nil {
		_ = syscall.Kill(p.PID, sig)
	}
}

// stopProcs sends SIGTERM to every process of ps that is alive, waits up
// to grace for them to exit, then SIGKILLs the rest and waits for them to
// be gone. It is for processes that are not this process's children;
// gone reports each exit.
func stopProcs(ps []Proc, grace time.Duration) {
	for _, p := range ps {
		signalGroup(p, syscall.SIGTERM)
	}
	if waitGone(ps, grace) {
		return
	}
	for _, p := range ps {
		signalGroup(p, syscall.SIGKILL)
	}
	waitGone(ps, killWait)
}

// killWait bounds the wait for a SIGKILLed process to disappear.
const killWait = 5 * time.Second

func waitGone(ps []Proc, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		any := false
		for _, p := range ps {
			if alive(p) {
				any = true
			}
		}
		if !any {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
}

package integration

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill cmd if the test binary dies first (a
// test timeout, a SIGKILL), so no coordinator, worker or etcd member
// outlives the run.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

//go:build unix

package launch

import (
	"os/exec"
	"syscall"
)

// detach puts the child in its own process group, so a Ctrl-C at the
// terminal reaches only the launcher, which turns it into a stop message
// that every rank handles at the same step.
func detach(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

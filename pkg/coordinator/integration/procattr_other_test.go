//go:build !linux

package integration

import "os/exec"

// dieWithParent: only Linux can tie a child's life to its parent's; on
// other systems the test's cleanup stops the children.
func dieWithParent(*exec.Cmd) {}

// Command coordinator is tern's control-plane server: it keeps job state in etcd and places ranks on workers.
//
// The control plane is not part of this release: train on one machine with
// `ternctl train -f job.yaml`. This binary only reports that, so scripts
// that call it fail loudly instead of hanging.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "coordinator: the tern control plane is not available in this release; train locally with: ternctl train -f job.yaml")
	os.Exit(2)
}

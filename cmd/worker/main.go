// Command worker is tern's node agent: it registers with the coordinator, runs the ranks it is given and serves its peers.
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
	fmt.Fprintln(os.Stderr, "worker: the tern control plane is not available in this release; train locally with: ternctl train -f job.yaml")
	os.Exit(2)
}

package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// plan --coordinator (or --remote) asks the coordinator over gRPC: the
// same plan as the local one, and whether the cluster can place the job.
func TestPlanRemote(t *testing.T) {
	addr := startCluster(t, 2)
	job := writeJob(t, planTestJob)

	local := runCLI(t, false, "plan", "-f", job, "-o", "json")
	remote := runCLI(t, false, "plan", "-f", job, "-o", "json", "--coordinator", addr)
	if local.code != 0 || remote.code != 0 {
		t.Fatalf("exit %d and %d, stderr:\n%s\n%s", local.code, remote.code, local.stderr, remote.stderr)
	}
	var lp map[string]any
	var rp struct {
		Plan      map[string]any `json:"plan"`
		Ranks     int            `json:"ranks"`
		Workers   int            `json:"workers"`
		FreeSlots int            `json:"free_slots"`
		Placeable bool           `json:"placeable"`
		Placement string         `json:"placement"`
	}
	if err := json.Unmarshal([]byte(local.stdout), &lp); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(remote.stdout), &rp); err != nil {
		t.Fatalf("remote plan is not JSON: %v\n%s", err, remote.stdout)
	}
	if !reflect.DeepEqual(lp, rp.Plan) {
		t.Fatalf("the coordinator's plan differs from the local one:\nlocal  %v\nremote %v", lp, rp.Plan)
	}
	if rp.Ranks != 1 || rp.Workers != 1 || rp.FreeSlots != 2 || !rp.Placeable || !strings.Contains(rp.Placement, "w1") {
		t.Fatalf("placement answer %+v, want 1 rank placeable on w1's 2 free slots", rp)
	}

	// Two ranks fit on the one worker: no other worker, so no peer
	// snapshots to plan for.
	two := runCLI(t, false, "plan", "-f", job, "--coordinator", addr, "--set", "parallel.data=2")
	if two.code != 0 || !strings.Contains(two.stdout, "It can be placed now") || strings.Contains(two.stdout, "In-memory snapshots") {
		t.Fatalf("exit %d\n%s%s", two.code, two.stdout, two.stderr)
	}

	t.Setenv("TERN_COORDINATOR", addr)
	big := runCLI(t, false, "plan", "-f", job, "--remote", "--set", "parallel.data=3")
	if big.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", big.code, big.stderr)
	}
	for _, w := range []string{"TOTAL", "Cluster at " + addr + ": workers 1, free slots 2", "needs 3 ranks", "It cannot be placed now:"} {
		if !strings.Contains(big.stdout, w) {
			t.Errorf("stdout lacks %q:\n%s", w, big.stdout)
		}
	}
}

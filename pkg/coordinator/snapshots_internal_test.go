package coordinator

import "testing"

// Rank errors that only say a peer went away are told from a rank's own
// faults; the peer ones are the texts pkg/comm produced in chaos runs.
func TestPeerFailure(t *testing.T) {
	for _, tc := range []struct {
		why  string
		peer bool
	}{
		{"step 5: step result exchange: comm: all-gather #7 (group 0, rank 3 of 4): step 1: recv from rank 2: comm: rank 2 recv: tag all_gather/7/1: rank 2 closed its transport: peer closed", true},
		{"step 8: gradient all-reduce: comm: all-reduce #3 (group 1048576, rank 0 of 2): all-gather step 0: recv from rank 2: comm: rank 2 recv: tag all_reduce/1152921504606846979/1: stream to rank 2 broke (Unavailable: error reading from server: connection reset by peer): peer closed", true},
		{"step 34: stage 1 Bcast C0#2(mb 0, root 1): comm: broadcast #342 from group rank 1 (group 2, rank 1 of 2): recv from rank 2: comm: rank 2 recv: tag broadcast/342/0: no message within 1m0s: timed out", true},
		{"restore step 12 from peers: snapshot rank 1 step 12 unrecoverable: 1 of 2 fragments", false},
		{"step 3: loss is NaN", false},
		{"job spec from the coordinator: spec.steps: must be >= 1", false},
	} {
		if got := peerFailure(tc.why); got != tc.peer {
			t.Errorf("peerFailure(%q) = %v, want %v", tc.why, got, tc.peer)
		}
	}
}

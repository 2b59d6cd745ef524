package job

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/coordinator/sched"
)

// running returns a job of two ranks on w1 and w2, running attempt 1.
func running(t *testing.T, maxRestarts int) *Job {
	t.Helper()
	j, _, err := New(Spec{Name: "j", DP: 2, PP: 1, MaxRestarts: maxRestarts})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []Event{
		Placed{Attempt: 1, Assignment: sched.Assignment{{Rank: 0, Worker: "w1"}, {Rank: 1, Worker: "w2"}}},
		RanksStarted{Attempt: 1},
	} {
		if _, err := j.Step(ev); err != nil {
			t.Fatal(err)
		}
	}
	return j
}

func TestNewRejectsBadSpecs(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{DP: 1, PP: 1}, "no name"},
		{Spec{Name: "x", DP: 0, PP: 1}, "DP 0 × PP 1"},
		{Spec{Name: "x", DP: 1 << 10, PP: 1 << 10}, "at most 65536"},
		{Spec{Name: "x", DP: 1, PP: 1, MaxRestarts: -1}, "maxRestarts is -1"},
		{Spec{Name: "x", DP: 1, PP: 1, MaxRestarts: MaxRestartsLimit + 1}, "allowed 0 to 10000"},
	} {
		_, _, err := New(tc.spec)
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want ErrInvalidSpec containing %q", tc.spec, err, tc.want)
		}
	}
}

// TestStepErrorClasses checks that rejections wrap the sentinel the I/O
// loop branches on.
func TestStepErrorClasses(t *testing.T) {
	type unknownEvent struct{ CapacityChanged }
	for _, tc := range []struct {
		name string
		ev   Event
		want error
	}{
		{"old attempt", RankFailed{Attempt: 0, Rank: 0}, ErrStale},
		{"future attempt", RankFailed{Attempt: 2, Rank: 0}, ErrInvalidEvent},
		{"late placement", Placed{Attempt: 1}, ErrStale},
		{"bad rank", RankFailed{Attempt: 1, Rank: 5}, ErrInvalidEvent},
		{"resume while running", Resume{}, ErrInvalidEvent},
		{"stale timer", TimerFired{Timer: TimerStart, Attempt: 1}, ErrStale},
		{"unknown event", unknownEvent{}, ErrInvalidEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := running(t, 1)
			before, _ := json.Marshal(j)
			acts, err := j.Step(tc.ev)
			if !errors.Is(err, tc.want) || acts != nil {
				t.Fatalf("got %v, %v; want %v", acts, err, tc.want)
			}
			if after, _ := json.Marshal(j); string(after) != string(before) {
				t.Fatalf("rejected event changed the job")
			}
		})
	}
	j := running(t, 0)
	if _, err := j.Step(Cancel{}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Step(Resume{}); !errors.Is(err, ErrFinished) {
		t.Fatalf("event after cancel: %v, want ErrFinished", err)
	}
}

func TestHoldsSlots(t *testing.T) {
	j := running(t, 1)
	if !j.HoldsSlots() {
		t.Fatal("a running job must hold its slots")
	}
	if _, err := j.Step(Pause{}); err != nil {
		t.Fatal(err)
	}
	if j.HoldsSlots() {
		t.Fatal("a paused job must free its slots")
	}
}

func TestRestoreRejectsDamagedRecords(t *testing.T) {
	good, _ := json.Marshal(running(t, 1))
	edit := func(f func(m map[string]any)) string {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	for _, tc := range []struct {
		name, data, want string
	}{
		{"not json", "{", "unexpected EOF"},
		{"trailing data", string(good) + "{}", "data after the record"},
		{"unknown field", edit(func(m map[string]any) { m["extra"] = 1 }), `unknown field "extra"`},
		{"unknown phase", edit(func(m map[string]any) { m["phase"] = "Sleeping" }), `unknown phase "Sleeping"`},
		{"restarts over budget", edit(func(m map[string]any) { m["restarts"] = 2 }), "restarts 2: must be between 0 and maxRestarts 1"},
		{"no version", edit(func(m map[string]any) { m["version"] = 0 }), "version 0"},
		{"running without ranks", edit(func(m map[string]any) { delete(m, "assignment") }), "assignment places 0 of the job's 2 ranks"},
		{"running with a recovery", edit(func(m map[string]any) { m["recovery"] = map[string]any{"ranks": []int{1}} }), "phase Running with recovery true"},
		{"negative step", edit(func(m map[string]any) { m["committedStep"] = -1 }), "committed step -1"},
		{"bad spec", edit(func(m map[string]any) { m["spec"].(map[string]any)["dp"] = 0 }), "DP 0 × PP 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Restore([]byte(tc.data))
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrCorrupt containing %q", err, tc.want)
			}
		})
	}
	if _, err := Restore(good); err != nil {
		t.Fatalf("good record: %v", err)
	}
}

// TestRandomWalk feeds seeded random event sequences, most of them
// nonsense, and checks after every event that Step kept its contract:
// rejected events change nothing, accepted ones keep the record's
// invariants, attempts and restarts never go backwards, restarts stay
// within the budget, and the record survives a round trip.
func TestRandomWalk(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	workers := []string{"w1", "w2", "w3", "w4"}
	seen := map[Phase]int{}
	launched, shrunk, grown := 0, 0, 0
	for walk := range 300 {
		spec := Spec{Name: "walk", DP: 1 + rng.IntN(3), PP: 1 + rng.IntN(2), MaxRestarts: rng.IntN(3)}
		if rng.IntN(2) == 0 {
			spec.Shrink, spec.MicroBatches = true, 1+rng.IntN(2)
		}
		j, _, err := New(spec)
		if err != nil {
			t.Fatal(err)
		}
		for n := range 60 {
			ev := randomEvent(rng, j, workers)
			prev := j.clone()
			before, _ := json.Marshal(j)
			acts, err := j.Step(ev)
			after, _ := json.Marshal(j)
			if err != nil {
				if string(after) != string(before) {
					t.Fatalf("walk %d event %d %#v: rejected (%v) but changed the job", walk, n, ev, err)
				}
				if !errors.Is(err, ErrInvalidEvent) && !errors.Is(err, ErrStale) && !errors.Is(err, ErrFinished) {
					t.Fatalf("walk %d event %d: error %v wraps no sentinel", walk, n, err)
				}
				continue
			}
			if err := j.check(); err != nil {
				t.Fatalf("walk %d event %d %#v: invariant broken: %v\n%s", walk, n, ev, err, after)
			}
			if j.Attempt < prev.Attempt || j.Restarts < prev.Restarts || j.CommittedStep < prev.CommittedStep {
				t.Fatalf("walk %d event %d %#v: went backwards:\n%s\n%s", walk, n, ev, before, after)
			}
			if changed := string(after) != string(before); changed != (len(acts) > 0 && acts[0] == Persist{j.Version}) {
				t.Fatalf("walk %d event %d: changed=%v but actions %v", walk, n, changed, acts)
			}
			j = roundTrip(t, "random walk", j)
			seen[j.Phase]++
			if j.Recovery != nil && j.Recovery.Launched {
				launched++
			}
			if j.DP > 0 && prev.DP == 0 {
				shrunk++
			}
			if j.DP == 0 && prev.DP > 0 && j.Phase == Recovering {
				grown++
			}
		}
	}
	// The walks must reach every phase, or they test less than they claim.
	for _, p := range phases {
		if seen[p] == 0 {
			t.Errorf("no walk reached %s (reached: %v)", p, seen)
		}
	}
	if launched == 0 || shrunk == 0 || grown == 0 {
		t.Errorf("walks launched %d recoveries, shrank %d times and grew back %d times: each must happen", launched, shrunk, grown)
	}
}

// randomEvent draws an event, biased towards ones that make sense now so
// walks get deep into the lifecycle.
func randomEvent(rng *rand.Rand, j *Job, workers []string) Event {
	attempt := j.Attempt
	if rng.IntN(8) == 0 {
		attempt += rng.IntN(3) - 1
	}
	// Shrinking jobs get their timer and capacity changes often enough
	// to shrink and grow back.
	switch {
	case j.Spec.Shrink && j.Phase == Recovering && !j.Recovery.Launched && rng.IntN(3) == 0:
		return TimerFired{Timer: TimerShrink, Attempt: attempt}
	case j.DP > 0 && j.Phase == Recovering && j.Recovery.Launched && rng.IntN(3) == 0:
		return RecoveryDone{Attempt: attempt, Step: j.CommittedStep}
	case j.DP > 0 && j.Phase == Running && !j.Growing && rng.IntN(2) == 0:
		return CapacityChanged{}
	}
	// A replacement places the current shape; a whole placement and a
	// growth the spec's.
	world := j.world()
	if j.Phase != Recovering {
		world = j.Spec.World()
	}
	n := rng.IntN(14)
	if j.Growing && rng.IntN(2) == 0 {
		n = 1 // an answer to the growth
	}
	switch n {
	case 0:
		return CapacityChanged{}
	case 1, 2:
		a := make(sched.Assignment, world)
		for r := range a {
			a[r] = sched.Placement{Rank: r, Worker: workers[rng.IntN(len(workers))], Slot: r}
		}
		if j.Recovery != nil && rng.IntN(4) > 0 {
			// A well-formed replacement keeps the survivors.
			for r := range a {
				if !slices.Contains(j.Recovery.Ranks, r) {
					a[r] = j.Assignment[r]
				} else {
					a[r].Slot = world + r
				}
			}
		}
		if j.Growing && rng.IntN(4) > 0 {
			// A well-formed growth keeps the running ranks.
			for r := range a {
				if r < len(j.Assignment) {
					a[r] = j.Assignment[r]
				} else {
					a[r].Slot = world + r
				}
			}
		}
		return Placed{Attempt: attempt + 1, Assignment: a}
	case 3:
		return Unplaceable{Attempt: attempt + 1, Reason: []string{"full", "no workers"}[rng.IntN(2)]}
	case 4:
		return RanksStarted{Attempt: attempt}
	case 5:
		return StepCommitted{Attempt: attempt, Step: j.CommittedStep + int64(rng.IntN(3)) - 1}
	case 6:
		return RankFailed{Attempt: attempt, Rank: rng.IntN(world + 1), Reason: "boom", Exited: true, ExitStatus: 1}
	case 7:
		return WorkerLost{Worker: workers[rng.IntN(len(workers))]}
	case 8:
		return Finished{Attempt: attempt, Step: j.CommittedStep + int64(rng.IntN(2))}
	case 9:
		if rng.IntN(4) == 0 {
			return Cancel{}
		}
		return Pause{}
	case 10:
		return Resume{}
	case 11:
		return RecoveryDone{Attempt: attempt, Step: j.CommittedStep - int64(rng.IntN(4)/3)}
	default:
		return TimerFired{Timer: []Timer{TimerStart, TimerRecovery, TimerShrink, "other"}[rng.IntN(4)], Attempt: attempt}
	}
}

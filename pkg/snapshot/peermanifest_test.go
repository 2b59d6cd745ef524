package snapshot

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// etcdMaxRequestBytes is etcd's default request limit (embed.Config
// MaxRequestBytes, 1.5 MiB); the committed manifest travels in one
// transaction with the committed step.
const etcdMaxRequestBytes = 3 << 19

// manifestAt builds the manifest of a placement of ranks ranks, one per
// worker, with realistic worker ids and state sizes.
func manifestAt(t testing.TB, ranks, m, k int) *PeerManifest {
	in := PlacementInput{Tolerate: m, DataShards: k}
	for r := range ranks {
		id := fmt.Sprintf("worker-%05d.rack-%02d.example.internal", r, r%40)
		in.RankWorker = append(in.RankWorker, id)
		in.Workers = append(in.Workers, PlacementWorker{ID: id, Labels: map[string]string{"rack": fmt.Sprint(r % 40)}})
	}
	in.Levels = []string{"rack"}
	p, err := Place(in)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTracker("a-job-name", p, 7, 990)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var acts []Action
	for r := range ranks {
		rep := Report{Rank: r, Step: 1000, Epoch: 7, StateBytes: 6 << 30, StateCRC: rng.Uint32()}
		for range p.Code.Fragments() {
			rep.FragmentCRCs = append(rep.FragmentCRCs, rng.Uint32())
		}
		if acts, err = tr.Report(rep); err != nil {
			t.Fatal(err)
		}
	}
	if len(acts) != 1 || acts[0].Kind != Propose {
		t.Fatalf("after every report: %v", acts)
	}
	return acts[0].Manifest
}

// At 1,000 ranks the manifest fits etcd's request limit with room to
// spare, measured and by construction (the bound holds for any content).
func TestPeerManifestSizeAt1000Ranks(t *testing.T) {
	for _, c := range []Code{{K: 8, M: 2}, {K: MaxDataShards, M: MaxTolerate}} {
		m := manifestAt(t, 1000, c.M, c.K)
		b, err := MarshalPeerManifest(m)
		if err != nil {
			t.Fatal(err)
		}
		bound := PeerManifestBound(m.Code, 1000, 1000, maxWorkerIDBytes, len(m.Job))
		t.Logf("%v: %d bytes at 1000 ranks (%.1f per rank), bound %d, etcd limit %d", m.Code, len(b), float64(len(b))/1000, bound, etcdMaxRequestBytes)
		if len(b) > bound {
			t.Fatalf("%v: %d bytes above the bound %d", m.Code, len(b), bound)
		}
		if bound > etcdMaxRequestBytes {
			t.Fatalf("%v: the bound at 1000 ranks with %d-byte worker ids is %d, above etcd's %d", m.Code, maxWorkerIDBytes, bound, etcdMaxRequestBytes)
		}
		back, err := UnmarshalPeerManifest(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, m) {
			t.Fatal("manifest changed in the round trip")
		}
	}
}

func TestPeerManifestRejectsDamage(t *testing.T) {
	m := manifestAt(t, 5, 2, 2)
	b, err := MarshalPeerManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(b) * 8 {
		c := append([]byte(nil), b...)
		c[i/8] ^= 1 << (i % 8)
		if _, err := UnmarshalPeerManifest(c); !errors.Is(err, ErrStateCorrupt) {
			t.Fatalf("bit %d flipped: %v", i, err)
		}
	}
	for n := range len(b) {
		if _, err := UnmarshalPeerManifest(b[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: accepted", n)
		}
	}
	bad := *m
	bad.Ranks = append([]RankEntry(nil), m.Ranks...)
	bad.Ranks[1].Holders = []int{0, 99, 1}
	if _, err := MarshalPeerManifest(&bad); err == nil || !strings.Contains(err.Error(), "holder 99") {
		t.Fatalf("holder out of range: %v", err)
	}
	e, err := m.Expect(3)
	if err != nil || e.Rank != 3 || e.Step != 1000 || len(e.FragmentCRCs) != 3 {
		t.Fatalf("expect: %+v %v", e, err)
	}
}

// Random event sequences keep the protocol's invariants: the committed
// step never goes back, a step commits only when every rank of the
// current epoch reported it, and after a loss nothing uncommitted is left.
func TestTrackerRandomEvents(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	commits, losses := 0, 0
	for run := range 100 {
		ranks := 2 + rng.IntN(4)
		in := PlacementInput{Tolerate: 1}
		for r := range ranks {
			id := fmt.Sprint("w", r)
			in.RankWorker = append(in.RankWorker, id)
			in.Workers = append(in.Workers, PlacementWorker{ID: id})
		}
		p, err := Place(in)
		if err != nil {
			t.Fatal(err)
		}
		tr, _ := NewTracker("j", p, 1, -1)
		epoch := uint64(1)
		reported := map[int64]map[int]bool{}
		committed := int64(-1)
		proposed := int64(-1)
		step := make([]int64, ranks)
		for range 300 {
			var acts []Action
			switch x := rng.IntN(60); {
			case x < 45:
				// Ranks mostly report the step they all reached; now and
				// then one runs ahead of the others.
				r := rng.IntN(ranks)
				step[r] = max(step[r], slices.Max(step))
				if rng.IntN(8) == 0 {
					step[r] += 10
				}
				rep := Report{Rank: r, Step: step[r], Epoch: epoch, StateBytes: 8, FragmentCRCs: make([]uint32, p.Code.Fragments())}
				if rng.IntN(10) == 0 {
					rep.Epoch--
				}
				if acts, err = tr.Report(rep); err == nil {
					if reported[rep.Step] == nil {
						reported[rep.Step] = map[int]bool{}
					}
					reported[rep.Step][r] = true
				}
			case x < 54 && proposed >= 0:
				acts, _ = tr.Persisted(proposed)
			case x < 56 && proposed >= 0:
				acts, _ = tr.WriteFailed(proposed)
			case x < 58:
				acts, _ = tr.StageFailed(rng.IntN(ranks), step[rng.IntN(ranks)])
			default:
				if proposed >= 0 {
					continue
				}
				epoch++
				if acts, err = tr.Lost(epoch, rng.IntN(ranks)); err != nil {
					t.Fatal(err)
				}
				reported = map[int64]map[int]bool{}
				losses++
				if len(tr.Pending()) != 0 {
					t.Fatalf("run %d: pending %v after a loss", run, tr.Pending())
				}
			}
			for _, a := range acts {
				switch a.Kind {
				case Propose:
					if len(reported[a.Step]) != ranks {
						t.Fatalf("run %d: proposed step %d reported by %v of %d ranks", run, a.Step, reported[a.Step], ranks)
					}
					proposed = a.Step
				case Free:
					proposed = -1
					commits++
				case Abandon:
					if a.Step == proposed {
						proposed = -1
					}
				case Rollback:
					if a.Step != committed {
						t.Fatalf("run %d: rollback to %d, committed is %d", run, a.Step, committed)
					}
				}
			}
			if c := tr.Committed(); c < committed {
				t.Fatalf("run %d: committed went back from %d to %d", run, committed, c)
			} else {
				committed = c
			}
		}
	}
	if commits < 100 || losses < 100 {
		t.Fatalf("the random runs committed %d steps and lost ranks %d times: too few to exercise the protocol", commits, losses)
	}
	t.Logf("%d commits, %d losses", commits, losses)
}

package snapshot

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// cluster builds racks×nodes×workersPerNode workers and ranksPerWorker
// ranks on each, ranks numbered worker-major.
func cluster(racks, nodes, perNode, ranksPerWorker int) PlacementInput {
	var in PlacementInput
	for r := range racks {
		for n := range nodes {
			for w := range perNode {
				id := fmt.Sprintf("w-%d-%d-%d", r, n, w)
				in.Workers = append(in.Workers, PlacementWorker{ID: id, Labels: map[string]string{"rack": fmt.Sprint("r", r), "node": fmt.Sprintf("n%d-%d", r, n)}})
				for range ranksPerWorker {
					in.RankWorker = append(in.RankWorker, id)
				}
			}
		}
	}
	in.Levels = []string{"rack", "node"}
	return in
}

// checkSurvives loses every set of m domains at the placement's claimed
// level and requires each rank whose own domain was lost to keep at least
// k fragments on surviving workers.
func checkSurvives(t *testing.T, in PlacementInput, p *Placement) {
	t.Helper()
	dom := map[string]string{}
	for _, w := range in.Workers {
		d := w.ID
		if v, ok := w.Labels[p.Level]; ok && p.Level != WorkerLevel {
			d = v
		}
		dom[w.ID] = d
	}
	var names []string
	for _, d := range dom {
		if !slices.Contains(names, d) {
			names = append(names, d)
		}
	}
	slices.Sort(names)
	m := min(p.Code.M, len(names))
	subsets(len(names), m, func(lost []int) {
		dead := map[string]bool{}
		for _, i := range lost {
			dead[names[i]] = true
		}
		for r, owner := range in.RankWorker {
			if !dead[dom[owner]] {
				continue // its local copy survives
			}
			alive := 0
			for _, h := range p.Holders[r] {
				if !dead[dom[h]] {
					alive++
				}
			}
			if alive < p.Code.K {
				t.Fatalf("losing %s domains %v leaves rank %d %d fragments, need %d (holders %v)", p.Level, lost, r, alive, p.Code.K, p.Holders[r])
			}
		}
	})
}

func checkShape(t *testing.T, in PlacementInput, p *Placement) {
	t.Helper()
	total := 0
	for r, hs := range p.Holders {
		if len(hs) != p.Code.Fragments() {
			t.Fatalf("rank %d has %d holders, want %d", r, len(hs), p.Code.Fragments())
		}
		if slices.Contains(hs, in.RankWorker[r]) {
			t.Fatalf("rank %d's own worker %s holds one of its fragments", r, in.RankWorker[r])
		}
		s := slices.Clone(hs)
		slices.Sort(s)
		if len(slices.Compact(s)) != len(hs) {
			t.Fatalf("rank %d: a worker holds two of its fragments: %v", r, hs)
		}
		total += len(hs)
	}
	sum := 0
	for _, n := range p.Load {
		sum += n
	}
	if sum != total {
		t.Fatalf("load adds up to %d, %d fragments placed", sum, total)
	}
}

func TestPlacementProperties(t *testing.T) {
	cases := []struct {
		name          string
		in            PlacementInput
		m, k          int
		wantK         int
		wantLevel     string
		maxLoadSpread int
	}{
		{"4 flat workers m1", cluster(1, 1, 4, 1), 1, 0, 3, WorkerLevel, 0},
		{"4 flat workers m2", cluster(1, 1, 4, 1), 2, 0, 2, WorkerLevel, 0},
		{"4 flat workers m3", cluster(1, 1, 4, 1), 3, 0, 1, WorkerLevel, 0},
		{"16 flat workers m2", cluster(1, 1, 16, 1), 2, 0, 8, WorkerLevel, 0},
		{"2 ranks per worker", cluster(1, 1, 6, 2), 2, 0, 4, WorkerLevel, 1},
		{"4 racks of 3 m2: rack level", cluster(4, 3, 1, 1), 2, 0, 2, "rack", 1},
		{"3 racks of 2 nodes of 2 m1", cluster(3, 2, 2, 1), 1, 0, 2, "rack", 1},
		{"2 racks: node level", cluster(2, 4, 1, 1), 1, 0, 7, "node", 1},
		{"2 racks explicit k2 m2", cluster(2, 4, 1, 1), 2, 2, 2, "node", 1},
		{"nodes with 2 workers", cluster(1, 4, 2, 1), 1, 2, 2, "node", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.in
			in.Tolerate, in.DataShards = c.m, c.k
			p, err := Place(in)
			if err != nil {
				t.Fatal(err)
			}
			if p.Code.K != c.wantK || p.Level != c.wantLevel {
				t.Fatalf("k=%d level %s, want k=%d level %s", p.Code.K, p.Level, c.wantK, c.wantLevel)
			}
			checkShape(t, in, p)
			checkSurvives(t, in, p)
			lo, hi := 1<<30, 0
			for _, n := range p.Load {
				lo, hi = min(lo, n), max(hi, n)
			}
			if hi-lo > c.maxLoadSpread {
				t.Errorf("loads from %d to %d: %v", lo, hi, p.Load)
			}
		})
	}
}

// Random clusters: holders never include the owner, are distinct, and
// survive any m losses at the claimed level; the same input in another
// order gives the same placement.
func TestPlacementRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 200 {
		in := cluster(1+rng.IntN(4), 1+rng.IntN(3), 1+rng.IntN(3), 1+rng.IntN(2))
		in.Tolerate = 1 + rng.IntN(3)
		p, err := Place(in)
		if err != nil {
			if !strings.Contains(err.Error(), "use tolerate <=") {
				t.Fatalf("case %d: %v", i, err)
			}
			continue
		}
		checkShape(t, in, p)
		checkSurvives(t, in, p)
		shuffled := in
		shuffled.Workers = slices.Clone(in.Workers)
		rng.Shuffle(len(shuffled.Workers), func(a, b int) {
			shuffled.Workers[a], shuffled.Workers[b] = shuffled.Workers[b], shuffled.Workers[a]
		})
		q, err := Place(shuffled)
		if err != nil || !reflect.DeepEqual(p, q) {
			t.Fatalf("case %d: placement depends on the worker order (err %v)", i, err)
		}
	}
}

func TestPlacementErrors(t *testing.T) {
	cases := []struct {
		name string
		in   PlacementInput
		want string
	}{
		{"tolerate beyond workers", withTK(cluster(1, 1, 3, 1), 3, 0), "tolerate 3 needs each rank's fragments on at least 3 other workers, but there are 3 workers: use tolerate <= 2, or add workers"},
		{"k too large", withTK(cluster(1, 1, 4, 1), 2, 3), "dataShards 3 with tolerate 2 puts 4 fragments on distinct other workers, but only 3 exist besides a rank's own: use dataShards <= 2"},
		{"one worker", withTK(cluster(1, 1, 1, 2), 1, 0), "use tolerate <= 1, or add workers"},
		{"unknown worker", PlacementInput{RankWorker: []string{"x"}, Workers: []PlacementWorker{{ID: "y"}}, Tolerate: 1}, `rank 0 runs on worker "x", which is not in the worker list`},
		{"duplicate worker", PlacementInput{RankWorker: []string{"x"}, Workers: []PlacementWorker{{ID: "x"}, {ID: "x"}}, Tolerate: 1}, `worker "x" listed twice`},
		{"tolerate zero", withTK(cluster(1, 1, 3, 1), 0, 0), "tolerate 0: allowed 1..8"},
		{"no ranks", PlacementInput{Tolerate: 1}, "no ranks"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Place(c.in)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
}

func withTK(in PlacementInput, m, k int) PlacementInput {
	in.Tolerate, in.DataShards = m, k
	return in
}

package snapshot

import (
	"fmt"
	"slices"
	"strings"
)

// Placement of peer fragments (pure: no I/O, no clock, no randomness).
//
// Every rank's state is cut into k+m−1 fragments held by as many workers
// other than the rank's own. Losing a worker loses the ranks on it and the
// fragments it holds, so the guarantee "any m worker losses leave every
// rank recoverable" needs each rank's holders on distinct workers, none of
// them its own (fragment.go). Machines fail together too (a node with
// several workers, a rack behind one switch: research fault-tolerance.md
// §10.1, correlated failures dominate), so the placement prefers holders
// whose failure domains (worker labels such as node and rack) differ from
// each other and from the owner's, widest domain first, and reports the
// widest level at which the guarantee holds for every rank. Among equally
// good workers it takes the least loaded, then a rotation from the owner,
// so load spreads evenly and the result depends only on the input.

// MaxDerivedDataShards caps the derived k: beyond 8 the traffic saving
// ((k+m−1)/k) is small and every restore involves more peers (research
// §0, k=8 in the recommended layout).
const MaxDerivedDataShards = 8

// WorkerLevel is the failure-domain level of a single worker; Placement
// reports it when no wider level (a label) is satisfied.
const WorkerLevel = "worker"

// PlacementWorker is one worker that can hold fragments.
type PlacementWorker struct {
	ID     string
	Labels map[string]string // e.g. {"node": "n1", "rack": "r3"}
}

// PlacementInput is everything the placement depends on.
type PlacementInput struct {
	// RankWorker[r] is the worker rank r runs on.
	RankWorker []string
	Workers    []PlacementWorker
	// Levels are the label keys of failure domains, widest first
	// (e.g. ["rack", "node"]). A worker without a level's label is a
	// domain of its own at that level.
	Levels []string
	// Tolerate is m; DataShards is k (0: derived, see ChooseDataShards).
	Tolerate, DataShards int
}

// Placement says, for every rank, which worker holds which fragment.
type Placement struct {
	Code Code
	// Holders[r][i] is the worker holding fragment i of rank r.
	Holders [][]string
	// Level is the widest failure-domain level (a label key, or
	// WorkerLevel) at which every rank's holders are distinct from each
	// other and from the owner's domain: losing any Code.M domains of
	// that level leaves every rank its local copy or ≥ k fragments.
	Level string
	// Load[w] is the number of fragments worker w holds.
	Load map[string]int
}

// Place computes the placement. It fails, saying what would work, when
// the workers cannot give every rank k+m−1 holders on other workers.
func Place(in PlacementInput) (*Placement, error) {
	ws, rankIdx, err := checkPlacement(in)
	if err != nil {
		return nil, err
	}
	domains := domainTable(ws, in.Levels)
	k, err := ChooseDataShards(domains, in.Tolerate, in.DataShards)
	if err != nil {
		return nil, err
	}
	c := Code{K: k, M: in.Tolerate}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("snapshot placement: %w", err)
	}
	n := c.Fragments()
	load := make([]int, len(ws))
	p := &Placement{Code: c, Holders: make([][]string, len(rankIdx)), Load: make(map[string]int, len(ws))}
	levels := len(in.Levels)
	for r, o := range rankIdx {
		chosen := make([]int, 0, n)
		used := make([]bool, len(ws))
		used[o] = true
		// taken[l][d]: domain d of level l holds the owner or a holder.
		taken := make([][]bool, levels)
		for l := range levels {
			taken[l] = make([]bool, len(ws))
			taken[l][domains[l][o]] = true
		}
		key, bestKey := make([]int, 0, levels+2), make([]int, 0, levels+2)
		for range n {
			best := -1
			for w := range ws {
				if used[w] {
					continue
				}
				// Key, compared lexicographically: for each level
				// widest first, whether w shares a domain with the
				// owner or a holder already chosen; then load; then
				// the rotation from the owner (shifted by the rank, so
				// ranks on one worker start at different places).
				key = key[:0]
				for l := range levels {
					clash := 0
					if taken[l][domains[l][w]] {
						clash = 1
					}
					key = append(key, clash)
				}
				key = append(key, load[w], ((w-o-1-r)%len(ws)+2*len(ws))%len(ws))
				if best < 0 || slices.Compare(key, bestKey) < 0 {
					best = w
					key, bestKey = bestKey, key
				}
			}
			chosen = append(chosen, best)
			used[best] = true
			for l := range levels {
				taken[l][domains[l][best]] = true
			}
			load[best]++
		}
		p.Holders[r] = make([]string, n)
		for i, w := range chosen {
			p.Holders[r][i] = ws[w].ID
		}
	}
	for i, w := range ws {
		p.Load[w.ID] = load[i]
	}
	p.Level = WorkerLevel
	for l := range levels {
		if distinctAt(domains[l], rankIdx, p, ws) {
			p.Level = in.Levels[l]
			break
		}
	}
	return p, nil
}

// checkPlacement validates the input and returns the workers sorted by id
// and each rank's worker index into them.
func checkPlacement(in PlacementInput) ([]PlacementWorker, []int, error) {
	if len(in.RankWorker) == 0 {
		return nil, nil, fmt.Errorf("snapshot placement: no ranks")
	}
	if in.Tolerate < 1 || in.Tolerate > MaxTolerate {
		return nil, nil, fmt.Errorf("snapshot placement: tolerate %d: allowed 1..%d", in.Tolerate, MaxTolerate)
	}
	if in.DataShards < 0 || in.DataShards > MaxDataShards {
		return nil, nil, fmt.Errorf("snapshot placement: dataShards %d: allowed 1..%d, or 0 to derive it", in.DataShards, MaxDataShards)
	}
	ws := slices.Clone(in.Workers)
	slices.SortFunc(ws, func(a, b PlacementWorker) int { return strings.Compare(a.ID, b.ID) })
	idx := make(map[string]int, len(ws))
	for i, w := range ws {
		if w.ID == "" {
			return nil, nil, fmt.Errorf("snapshot placement: a worker has an empty id")
		}
		if _, dup := idx[w.ID]; dup {
			return nil, nil, fmt.Errorf("snapshot placement: worker %q listed twice", w.ID)
		}
		idx[w.ID] = i
	}
	seen := make(map[string]bool, len(in.Levels))
	for _, l := range in.Levels {
		if l == "" || l == WorkerLevel || seen[l] {
			return nil, nil, fmt.Errorf("snapshot placement: failure-domain level %q is empty, repeated or reserved", l)
		}
		seen[l] = true
	}
	rankIdx := make([]int, len(in.RankWorker))
	for r, id := range in.RankWorker {
		i, ok := idx[id]
		if !ok {
			return nil, nil, fmt.Errorf("snapshot placement: rank %d runs on worker %q, which is not in the worker list", r, id)
		}
		rankIdx[r] = i
	}
	return ws, rankIdx, nil
}

// domainTable[l][w] is worker w's domain at level l (a dense id); the last
// row is the worker level.
func domainTable(ws []PlacementWorker, levels []string) [][]int {
	t := make([][]int, len(levels)+1)
	for l := range t {
		ids := map[string]int{}
		t[l] = make([]int, len(ws))
		for w, wk := range ws {
			key := "\x00" + wk.ID // own domain
			if l < len(levels) {
				if v, ok := wk.Labels[levels[l]]; ok {
					key = v
				}
			}
			if _, ok := ids[key]; !ok {
				ids[key] = len(ids)
			}
			t[l][w] = ids[key]
		}
	}
	return t
}

// distinctAt reports whether every rank's owner and holders lie in
// pairwise distinct domains of one level.
func distinctAt(dom []int, rankIdx []int, p *Placement, ws []PlacementWorker) bool {
	at := make(map[string]int, len(ws))
	for i, w := range ws {
		at[w.ID] = i
	}
	for r, o := range rankIdx {
		seen := map[int]bool{dom[o]: true}
		for _, h := range p.Holders[r] {
			d := dom[at[h]]
			if seen[d] {
				return false
			}
			seen[d] = true
		}
	}
	return true
}

// ChooseDataShards returns k for tolerance m given the domain table (one
// row per level, widest first, the worker level last). A requested k > 0
// is checked against the workers; 0 derives it: at the widest level whose
// domains give k ≥ 2 (so a rank's fragments can sit in domains other
// than its own and each other's), k = min(MaxDerivedDataShards, domains −
// m), else from the workers alone, k = min(MaxDerivedDataShards, workers −
// m). The error says what tolerance or k would work.
func ChooseDataShards(domains [][]int, m, want int) (int, error) {
	workerRow := domains[len(domains)-1]
	peers := len(workerRow) - 1 // workers other than a rank's own
	if m > peers {
		return 0, fmt.Errorf("snapshot placement: tolerate %d needs each rank's fragments on at least %d other workers, but there are %d workers: use tolerate <= %d, or add workers", m, m, len(workerRow), max(peers, 1))
	}
	if want > 0 {
		if want+m-1 > peers {
			return 0, fmt.Errorf("snapshot placement: dataShards %d with tolerate %d puts %d fragments on distinct other workers, but only %d exist besides a rank's own: use dataShards <= %d, or leave it out to derive it", want, m, want+m-1, peers, peers-m+1)
		}
		return want, nil
	}
	for _, row := range domains[:len(domains)-1] {
		n := slices.Max(row) + 1
		if k := n - m; k >= 2 {
			return min(MaxDerivedDataShards, k), nil
		}
	}
	return min(MaxDerivedDataShards, peers-m+1), nil
}

// ServingRank maps a worker to the rank that serves its fragments over
// the transport: the lowest rank running on it, or -1 when none does.
func ServingRank(rankWorker []string, worker string) int {
	return slices.Index(rankWorker, worker)
}

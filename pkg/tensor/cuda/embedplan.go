package cuda

import "sort"

// embedPlan groups the positions of a token batch by the shard row they
// update, so the embedding backward kernel can give each row to one thread
// block that sums its positions in token order: the same order as the CPU,
// and no atomics. Row b of the plan is shard row rows[b], whose positions are
// pos[start[b]:start[b+1]], increasing; rows are in increasing order.
type embedPlan struct {
	rows, start, pos []int32
}

// denseShardMax is the largest shard for which newEmbedPlan counts rows in
// an array of the shard's size (a counting sort, O(tokens + rows)); larger
// shards use a map.
const denseShardMax = 1 << 22

func newEmbedPlan(tokens []int32, lo, hi int) embedPlan {
	if hi-lo <= denseShardMax {
		return denseEmbedPlan(tokens, lo, hi)
	}
	return sparseEmbedPlan(tokens, lo, hi)
}

func denseEmbedPlan(tokens []int32, lo, hi int) embedPlan {
	count := make([]int32, hi-lo)
	for _, t := range tokens {
		if int(t) >= lo && int(t) < hi {
			count[int(t)-lo]++
		}
	}
	var p embedPlan
	p.start = []int32{0}
	next := count // reused: becomes each row's next slot
	for r, c := range count {
		if c > 0 {
			p.rows = append(p.rows, int32(r))
			end := p.start[len(p.start)-1] + c
			next[r] = end - c
			p.start = append(p.start, end)
		}
	}
	p.pos = make([]int32, p.start[len(p.start)-1])
	for n, t := range tokens {
		if int(t) >= lo && int(t) < hi {
			r := int(t) - lo
			p.pos[next[r]] = int32(n)
			next[r]++
		}
	}
	return p
}

func sparseEmbedPlan(tokens []int32, lo, hi int) embedPlan {
	count := map[int32]int32{}
	for _, t := range tokens {
		if int(t) >= lo && int(t) < hi {
			count[t-int32(lo)]++
		}
	}
	var p embedPlan
	p.rows = make([]int32, 0, len(count))
	for r := range count {
		p.rows = append(p.rows, r)
	}
	sort.Slice(p.rows, func(i, j int) bool { return p.rows[i] < p.rows[j] })
	p.start = make([]int32, len(p.rows)+1)
	next := make(map[int32]int32, len(p.rows))
	for b, r := range p.rows {
		p.start[b+1] = p.start[b] + count[r]
		next[r] = p.start[b]
	}
	p.pos = make([]int32, p.start[len(p.rows)])
	for n, t := range tokens {
		if int(t) >= lo && int(t) < hi {
			r := t - int32(lo)
			p.pos[next[r]] = int32(n)
			next[r]++
		}
	}
	return p
}

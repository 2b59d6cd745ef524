package parallel

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// Timing is when an op started and ended in a simulation.
type Timing struct{ Start, End float64 }

// StageResult is one stage's share of a simulated step.
type StageResult struct {
	Compute float64 // time in compute ops
	// Comm is the time in collectives after their last member arrived;
	// with lanes, collectives take no time of the stage's own.
	Comm float64
	// Idle is the rest of the step: waiting for a receive or for the
	// other members of a collective, and before the first and after the
	// last op.
	Idle float64
	// PeakInFlight is the most microbatches whose F had started and whose
	// B had not ended, at any time: the transformer activations held.
	PeakInFlight int
	// PeakBytes is the highest sum of Costs.MemDelta reached.
	PeakBytes int64
	// MaxQueued is the most messages sent to this stage and not yet
	// received at any time (a message counts from its send until its
	// receive ends; ties count as overlapping): the buffering a runtime
	// needs for the stage's incoming messages under these costs.
	MaxQueued int
}

// Result is a simulated step.
type Result struct {
	Makespan float64
	// Bubble is the fraction of the stages' time not spent computing,
	// 1 − Σ Compute / (P·Makespan): the textbook bubble (p−1)/(m+p−1)
	// for 1F1B or GPipe with uniform stages and free communication.
	Bubble float64
	Stages []StageResult
	Times  [][]Timing // Times[i][j] is op j of stage i
}

// DeadlockError reports a schedule that stops before every stage has run its
// list: no stage's next op can run.
type DeadlockError struct {
	Blocked []BlockedOp // one per stage that has ops left, in stage order
	// Lanes lists each stage's next collective when collectives run
	// asynchronously and some are left; empty otherwise.
	Lanes string
}

// BlockedOp is a stage's next op in a deadlock and what it waits for.
type BlockedOp struct {
	Stage, Index int // Index is the op's position in the stage's list
	Op           Op
	Waiting      string
}

func (e *DeadlockError) Error() string {
	parts := make([]string, len(e.Blocked))
	for i, b := range e.Blocked {
		parts[i] = fmt.Sprintf("stage %d op %d %v waits for %s", b.Stage, b.Index, b.Op, b.Waiting)
	}
	if e.Lanes != "" {
		parts = append(parts, "collective lanes stuck at: "+e.Lanes)
	}
	return "deadlock: " + strings.Join(parts, "; ")
}

type msgKey struct {
	grad         bool
	from, to, mb int
}

// SimOptions choose how a simulated runtime executes collectives.
type SimOptions struct {
	// AsyncCollectives models a runtime that hands each collective to a
	// per-stage communication lane instead of waiting in it: reaching a
	// collective in the list takes no time; the lanes run the collectives
	// one at a time in list order, each once every member has handed it
	// over and finished the previous one; and only the op that consumes a
	// collective's result waits for it (S(i) for C0(i); T(i) and Loss(i)
	// for C1(i); the loss stage's B(i) for C2(i); stage 0's F(i) for
	// IFsum(i); IB(i) for IBbcast(i)). This is the reference
	// implementation's separate stream, and what lets vocabulary
	// parallelism hide its barriers behind compute. A schedule that runs
	// blocking also runs this way: every op becomes ready no later.
	AsyncCollectives bool
}

// collKey names a collective by what it carries.
type collKey struct {
	tag CollTag
	mb  int
}

// sim is the state of one simulation.
type sim struct {
	s     *Schedule
	c     Costs
	async bool
	// Async lanes: the collectives each stage has handed over and not yet
	// completed, in order, with their hand-over times; when each lane is
	// free; and each completed collective's end.
	lane     [][]laneEntry
	laneFree []float64
	done     map[collKey]float64
	pc       []int
	clock    []float64
	msgs     map[msgKey]float64 // arrival time of sent, not yet received messages
	arrive   map[int][]float64  // per collective id, each member's arrival time (NaN: not yet)
	res      *Result
	inFl     []int
	bytes    []int64
}

// Simulate runs s under the execution model every runtime of these
// schedules follows: each stage runs its ops one at a time in list order; a
// compute op takes Costs.Duration; a send never blocks and its message can
// be received Costs.P2PLatency later; a receive blocks until then; a
// collective blocks every member until all of them have reached it, then
// takes Costs.CollLatency. An op starts when its stage's previous op ended
// or, for a receive or collective, when what it waits for is ready.
//
// Sends never block, so whether a schedule deadlocks depends on the order of
// its ops alone, not on their costs; a deadlock is returned as a
// *DeadlockError naming every stage's blocked op. The result depends only on
// s and c: every time is a max/plus expression over the op graph, evaluated
// in a fixed order.
func Simulate(s *Schedule, c Costs, opt SimOptions) (*Result, error) {
	if len(s.Stages) != s.P || s.P < 1 {
		return nil, fmt.Errorf("simulate: schedule has %d stage lists for P=%d", len(s.Stages), s.P)
	}
	st := &sim{
		s: s, c: c, async: opt.AsyncCollectives,
		lane:     make([][]laneEntry, s.P),
		laneFree: make([]float64, s.P),
		done:     map[collKey]float64{},
		pc:       make([]int, s.P),
		clock:    make([]float64, s.P),
		msgs:     map[msgKey]float64{},
		arrive:   map[int][]float64{},
		res:      &Result{Stages: make([]StageResult, s.P), Times: make([][]Timing, s.P)},
		inFl:     make([]int, s.P),
		bytes:    make([]int64, s.P),
	}
	for i, ops := range s.Stages {
		st.res.Times[i] = make([]Timing, len(ops))
		for j, o := range ops {
			if err := checkOpShape(s, i, j, o); err != nil {
				return nil, fmt.Errorf("simulate: %w", err)
			}
		}
	}
	for {
		progressed, done := false, true
		if st.async {
			ok, err := st.runLanes()
			if err != nil {
				return nil, fmt.Errorf("simulate: %w", err)
			}
			progressed = ok
		}
		for r := range s.P {
			for st.pc[r] < len(s.Stages[r]) {
				ok, err := st.step(r)
				if err != nil {
					return nil, fmt.Errorf("simulate: %w", err)
				}
				if !ok {
					break
				}
				progressed = true
			}
			if st.pc[r] < len(s.Stages[r]) {
				done = false
			}
		}
		if done && st.lanesEmpty() {
			break
		}
		if !progressed {
			return nil, st.deadlock()
		}
	}
	return st.finish(), nil
}

// checkOpShape rejects ops the simulator cannot interpret.
func checkOpShape(s *Schedule, stage, idx int, o Op) error {
	where := func() string { return fmt.Sprintf("stage %d op %d %v", stage, idx, o) }
	switch {
	case o.Kind >= numKinds:
		return fmt.Errorf("%s: unknown kind", where())
	case o.Stage != stage:
		return fmt.Errorf("%s: op says stage %d", where(), o.Stage)
	case o.MB < 0 || o.MB >= s.M:
		return fmt.Errorf("%s: microbatch outside [0,%d)", where(), s.M)
	case o.Kind.IsP2P() && (o.Peer < 0 || o.Peer >= s.P || o.Peer == stage):
		return fmt.Errorf("%s: peer must be another stage in [0,%d)", where(), s.P)
	case o.Kind.IsCollective() && (o.Peer < 0 || o.Peer >= s.P):
		return fmt.Errorf("%s: root must be a stage in [0,%d)", where(), s.P)
	case o.Kind.IsCollective() && o.Coll < 0:
		return fmt.Errorf("%s: collective without an id", where())
	case o.Kind.IsCollective() && (o.Tag == NoTag || o.Tag >= numTags):
		return fmt.Errorf("%s: collective without a valid tag", where())
	}
	return nil
}

// step runs stage r's next op if it can; it reports whether it did.
func (st *sim) step(r int) (bool, error) {
	j := st.pc[r]
	o := st.s.Stages[r][j]
	now := st.clock[r]
	switch {
	case o.Kind.IsCompute():
		if st.async {
			at, ok := st.ready(o)
			if !ok {
				return false, nil
			}
			now = math.Max(now, at)
		}
		d := st.c.Duration(o)
		if !(d >= 0) || math.IsInf(d, 1) {
			return false, fmt.Errorf("stage %d op %d %v: duration %v must be finite and ≥ 0", r, j, o, d)
		}
		st.alloc(r, o)
		st.run(r, j, now, now+d)
		st.res.Stages[r].Compute += d
		st.free(r, o)
	case o.Kind == SendAct || o.Kind == SendGrad:
		lat := st.c.P2PLatency(o)
		if !(lat >= 0) || math.IsInf(lat, 1) {
			return false, fmt.Errorf("stage %d op %d %v: latency %v must be finite and ≥ 0", r, j, o, lat)
		}
		st.msgs[msgKey{o.Kind == SendGrad, r, o.Peer, o.MB}] = now + lat
		st.run(r, j, now, now)
	case o.Kind == RecvAct || o.Kind == RecvGrad:
		k := msgKey{o.Kind == RecvGrad, o.Peer, r, o.MB}
		at, ok := st.msgs[k]
		if !ok {
			return false, nil
		}
		delete(st.msgs, k)
		st.run(r, j, now, math.Max(now, at))
	case st.async:
		st.lane[r] = append(st.lane[r], laneEntry{o, now})
		st.run(r, j, now, now)
	default: // blocking collective
		return st.collective(r, o)
	}
	return true, nil
}

func (st *sim) run(r, j int, start, end float64) {
	st.res.Times[r][j] = Timing{start, end}
	st.clock[r] = end
	st.pc[r]++
}

// alloc and free keep the memory counters: activations are counted from the
// start of the op that allocates them to the end of the op that frees them.
func (st *sim) alloc(r int, o Op) {
	sr := &st.res.Stages[r]
	if o.Kind == F {
		st.inFl[r]++
		sr.PeakInFlight = max(sr.PeakInFlight, st.inFl[r])
	}
	if d := st.c.MemDelta(o); d > 0 {
		st.bytes[r] += d
		sr.PeakBytes = max(sr.PeakBytes, st.bytes[r])
	}
}

func (st *sim) free(r int, o Op) {
	if o.Kind == B {
		st.inFl[r]--
	}
	if d := st.c.MemDelta(o); d < 0 {
		st.bytes[r] += d
	}
}

// collective records stage r's arrival at its head collective and, once
// every stage has arrived, completes it on all of them.
func (st *sim) collective(r int, o Op) (bool, error) {
	arr, ok := st.arrive[o.Coll]
	if !ok {
		arr = make([]float64, st.s.P)
		for i := range arr {
			arr[i] = math.NaN()
		}
		st.arrive[o.Coll] = arr
	}
	arr[r] = st.clock[r]
	last := math.Inf(-1)
	for i, t := range arr {
		if math.IsNaN(t) {
			return false, nil
		}
		h := st.s.Stages[i][st.pc[i]]
		if h.Kind != o.Kind || h.Tag != o.Tag || h.MB != o.MB || h.Peer != o.Peer {
			return false, fmt.Errorf("collective #%d: stage %d runs %v but stage %d runs %v", o.Coll, r, o, i, h)
		}
		last = math.Max(last, t)
	}
	lat := st.c.CollLatency(st.s.Stages[o.Peer][st.pc[o.Peer]])
	if !(lat >= 0) || math.IsInf(lat, 1) {
		return false, fmt.Errorf("collective %v: latency %v must be finite and ≥ 0", o, lat)
	}
	for i, t := range arr {
		st.res.Times[i][st.pc[i]] = Timing{t, last + lat}
		st.res.Stages[i].Comm += lat
		st.clock[i] = last + lat
		st.pc[i]++
	}
	delete(st.arrive, o.Coll)
	return true, nil
}

type laneEntry struct {
	op Op
	at float64 // handed over
}

// consumes is the collective whose result compute op o waits for under
// AsyncCollectives, if any.
func (st *sim) consumes(o Op) (collKey, bool) {
	if st.s.Vocab != VocabParallel {
		return collKey{}, false
	}
	switch {
	case o.Kind == S:
		return collKey{C0, o.MB}, true
	case o.Kind == T || o.Kind == Loss:
		return collKey{C1, o.MB}, true
	case o.Kind == B && o.Stage == st.s.LossStage && st.s.Algorithm == 1:
		return collKey{C2, o.MB}, true
	case o.Kind == F && o.Stage == 0:
		return collKey{IFSum, o.MB}, true
	case o.Kind == IB:
		return collKey{IBBcast, o.MB}, true
	}
	return collKey{}, false
}

// ready is when o's collective input is available, if it is.
func (st *sim) ready(o Op) (float64, bool) {
	k, ok := st.consumes(o)
	if !ok {
		return math.Inf(-1), true
	}
	t, ok := st.done[k]
	return t, ok
}

// runLanes completes every collective that heads all members' lanes.
func (st *sim) runLanes() (bool, error) {
	progressed := false
	for {
		if len(st.lane[0]) == 0 {
			return progressed, nil
		}
		head := st.lane[0][0].op
		start := math.Inf(-1)
		for r := range st.s.P {
			if len(st.lane[r]) == 0 {
				return progressed, nil
			}
			h := st.lane[r][0]
			if h.op.Coll != head.Coll {
				return progressed, nil // a deadlock if nothing else moves
			}
			if h.op.Kind != head.Kind || h.op.Tag != head.Tag || h.op.MB != head.MB || h.op.Peer != head.Peer {
				return false, fmt.Errorf("collective #%d: stage 0 runs %v but stage %d runs %v", head.Coll, head, r, h.op)
			}
			start = math.Max(start, math.Max(h.at, st.laneFree[r]))
		}
		lat := st.c.CollLatency(st.lane[head.Peer][0].op)
		if !(lat >= 0) || math.IsInf(lat, 1) {
			return false, fmt.Errorf("collective %v: latency %v must be finite and ≥ 0", head, lat)
		}
		for r := range st.s.P {
			st.laneFree[r] = start + lat
			st.lane[r] = st.lane[r][1:]
		}
		st.done[collKey{head.Tag, head.MB}] = start + lat
		progressed = true
	}
}

func (st *sim) lanesEmpty() bool {
	for _, l := range st.lane {
		if len(l) > 0 {
			return false
		}
	}
	return true
}

// deadlock describes every stage's blocked op.
func (st *sim) deadlock() *DeadlockError {
	e := &DeadlockError{}
	for r := range st.s.P {
		j := st.pc[r]
		if j >= len(st.s.Stages[r]) {
			continue
		}
		o := st.s.Stages[r][j]
		b := BlockedOp{Stage: r, Index: j, Op: o}
		k, consumes := st.consumes(o)
		switch {
		case st.async && o.Kind.IsCompute() && consumes:
			b.Waiting = fmt.Sprintf("the result of %s(mb %d); lane heads: %s", k.tag, k.mb, st.laneHeads())
		case o.Kind == RecvAct:
			b.Waiting = fmt.Sprintf("SendAct(mb %d) from stage %d", o.MB, o.Peer)
		case o.Kind == RecvGrad:
			b.Waiting = fmt.Sprintf("SendGrad(mb %d) from stage %d", o.MB, o.Peer)
		default:
			var missing []string
			for i, t := range st.arrive[o.Coll] {
				if math.IsNaN(t) {
					missing = append(missing, fmt.Sprint(i))
				}
			}
			b.Waiting = fmt.Sprintf("stages %s to reach collective #%d", strings.Join(missing, ","), o.Coll)
		}
		e.Blocked = append(e.Blocked, b)
	}
	if st.async && !st.lanesEmpty() {
		e.Lanes = st.laneHeads()
	}
	return e
}

// queues fills MaxQueued from the op times.
func (st *sim) queues() {
	type ev struct {
		t float64
		d int
	}
	evs := make([][]ev, st.s.P)
	for r, ops := range st.s.Stages {
		for j, o := range ops {
			tm := st.res.Times[r][j]
			switch o.Kind {
			case SendAct, SendGrad:
				evs[o.Peer] = append(evs[o.Peer], ev{tm.Start, +1})
			case RecvAct, RecvGrad:
				evs[r] = append(evs[r], ev{tm.End, -1})
			}
		}
	}
	for r, e := range evs {
		sort.Slice(e, func(a, b int) bool {
			if e[a].t != e[b].t {
				return e[a].t < e[b].t
			}
			return e[a].d > e[b].d
		})
		n := 0
		for _, x := range e {
			n += x.d
			st.res.Stages[r].MaxQueued = max(st.res.Stages[r].MaxQueued, n)
		}
	}
}

// laneHeads lists each stage's next undone collective, for deadlock reports.
func (st *sim) laneHeads() string {
	parts := make([]string, st.s.P)
	for r, l := range st.lane {
		if len(l) == 0 {
			parts[r] = fmt.Sprintf("stage %d none", r)
		} else {
			parts[r] = fmt.Sprintf("stage %d %v", r, l[0].op)
		}
	}
	return strings.Join(parts, ", ")
}

func (st *sim) finish() *Result {
	res := st.res
	for _, t := range st.clock {
		res.Makespan = math.Max(res.Makespan, t)
	}
	for _, t := range st.laneFree {
		res.Makespan = math.Max(res.Makespan, t)
	}
	st.queues()
	var compute float64
	for i := range res.Stages {
		sr := &res.Stages[i]
		sr.Idle = res.Makespan - sr.Compute - sr.Comm
		compute += sr.Compute
	}
	if res.Makespan > 0 {
		res.Bubble = 1 - compute/(float64(st.s.P)*res.Makespan)
	}
	return res
}

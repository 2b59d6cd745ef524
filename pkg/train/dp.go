package train

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/comm"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/optim"
)

// bucketElems bounds the gradient bucket that is all-reduced at once (16 MiB
// of float32): small tensors are packed together so that a step sends a few
// large messages, and the extra memory is one bucket.
const bucketElems = 4 << 20

// replicas is a rank's view of the others: the world group it exchanges
// step results, evaluation losses and checkpoint status with, the group of
// its stage's data-parallel replicas it exchanges gradients with, and the
// transport under them for the byte counters. With pipeline parallelism a
// rank is stage pp of replica rank.
type replicas struct {
	world    *comm.Group
	g        *comm.Group // the stage's data-parallel replicas
	tr       comm.Transport
	rank     int    // data-parallel rank (replica)
	size     int    // data-parallel size
	pp       int    // pipeline stage
	stages   int    // pipeline size
	exchange string // spec.communication.exchange
	bucket   []float32
}

// lossStage reports whether this rank reports its replica's loss: the last
// stage (every rank without pipeline parallelism).
func (d *replicas) lossStage() bool { return d.pp == d.stages-1 }

func (d *replicas) wire() comm.Wire {
	if d.exchange == "bf16" {
		return comm.WireBF16
	}
	return comm.WireFloat32
}

// syncGrads replaces every held gradient with its mean over the replicas,
// in parameter order, packed into buckets. A weight whose gradient is
// row-selected (GRASS between refreshes) exchanges only its selected rows;
// at refresh steps the full gradient exists and is exchanged, so every
// replica selects rows from the same mean gradient.
func (d *replicas) syncGrads(ctx context.Context, params []*model.Param) error {
	if d.exchange == "none" || d.size == 1 {
		return nil
	}
	grads := make([][]float32, len(params))
	sizes := make([]int, len(params))
	for i, p := range params {
		grads[i] = optim.HeldGrad(p)
		sizes[i] = len(grads[i])
	}
	for _, b := range buckets(sizes) {
		if len(b) == 1 && sizes[b[0]] >= bucketElems {
			// A large tensor is reduced in place, without a copy.
			if err := d.g.AllReduce(ctx, grads[b[0]], comm.Mean, d.wire()); err != nil {
				return fmt.Errorf("gradient all-reduce of %s: %w", params[b[0]].Name, err)
			}
			continue
		}
		if d.bucket == nil {
			d.bucket = make([]float32, bucketElems)
		}
		n := 0
		for _, i := range b {
			n += copy(d.bucket[n:], grads[i])
		}
		if err := d.g.AllReduce(ctx, d.bucket[:n], comm.Mean, d.wire()); err != nil {
			return fmt.Errorf("gradient all-reduce: %w", err)
		}
		n = 0
		for _, i := range b {
			n += copy(grads[i], d.bucket[n:])
		}
	}
	return nil
}

// buckets groups gradients of the given sizes, in order, into the
// all-reduces syncGrads issues: consecutive tensors packed up to
// bucketElems, a tensor of bucketElems or more alone, empty ones skipped.
// The memory plan counts the exchange's bytes from the same grouping.
func buckets(sizes []int) [][]int {
	var out [][]int
	var cur []int
	n := 0
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
			cur, n = nil, 0
		}
	}
	for i, s := range sizes {
		switch {
		case s == 0:
			continue
		case s >= bucketElems:
			flush()
			out = append(out, []int{i})
			continue
		case n+s > bucketElems:
			flush()
		}
		cur = append(cur, i)
		n += s
	}
	flush()
	return out
}

// stepResult is what the replicas tell each other at the end of a step: the
// loss sum and token count of their share of the batch, and whether they
// were asked to stop.
type stepResult struct {
	LossSum float64
	Count   int64
	Stop    bool
}

const stepResultBytes = 17

func (s stepResult) encode() []byte {
	b := make([]byte, stepResultBytes)
	binary.LittleEndian.PutUint64(b, math.Float64bits(s.LossSum))
	binary.LittleEndian.PutUint64(b[8:], uint64(s.Count))
	if s.Stop {
		b[16] = 1
	}
	return b
}

func decodeStepResult(b []byte) (stepResult, error) {
	if len(b) != stepResultBytes || b[16] > 1 {
		return stepResult{}, fmt.Errorf("malformed step result of %d bytes", len(b))
	}
	return stepResult{
		LossSum: math.Float64frombits(binary.LittleEndian.Uint64(b)),
		Count:   int64(binary.LittleEndian.Uint64(b[8:])),
		Stop:    b[16] == 1,
	}, nil
}

// combine gathers every rank's result and returns the global-batch loss
// sum and count (summed in rank order over the replicas' loss stages, so
// every rank gets the same bits) and whether any rank wants to stop.
func (d *replicas) combine(ctx context.Context, mine stepResult) (stepResult, error) {
	if !d.lossStage() {
		mine.LossSum, mine.Count = 0, 0
	}
	all, err := d.world.AllGather(ctx, mine.encode())
	if err != nil {
		return stepResult{}, fmt.Errorf("step result exchange: %w", err)
	}
	var tot stepResult
	for rank, b := range all {
		s, err := decodeStepResult(b)
		if err != nil {
			return stepResult{}, fmt.Errorf("step result from rank %d: %w", rank, err)
		}
		tot.LossSum += s.LossSum
		tot.Count += s.Count
		tot.Stop = tot.Stop || s.Stop
	}
	return tot, nil
}

// gatherFloat64s all-gathers a fixed-length vector of float64 from every
// rank of the world, indexed by world rank.
func (d *replicas) gatherFloat64s(ctx context.Context, xs []float64) ([][]float64, error) {
	b := make([]byte, 8*len(xs))
	for i, x := range xs {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	all, err := d.world.AllGather(ctx, b)
	if err != nil {
		return nil, err
	}
	out := make([][]float64, len(all))
	for rank, a := range all {
		if len(a) != len(b) {
			return nil, fmt.Errorf("rank %d sent %d bytes, want %d", rank, len(a), len(b))
		}
		out[rank] = make([]float64, len(xs))
		for i := range xs {
			out[rank][i] = math.Float64frombits(binary.LittleEndian.Uint64(a[8*i:]))
		}
	}
	return out, nil
}

// encodeNamed serialises named tensors for a gather: per tensor the name
// length (u16), the name, the rank (u8), the dimensions (u32 each) and the
// float32 values, little-endian.
func encodeNamed(ts []optim.NamedTensor) []byte {
	var b []byte
	for _, t := range ts {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(t.Name)))
		b = append(b, t.Name...)
		b = append(b, byte(len(t.Shape)))
		for _, d := range t.Shape {
			b = binary.LittleEndian.AppendUint32(b, uint32(d))
		}
		for _, v := range t.Data {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	}
	return b
}

// decodeNamed is encodeNamed's inverse, validating every length against
// what is left of b.
func decodeNamed(b []byte) ([]optim.NamedTensor, error) {
	var out []optim.NamedTensor
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, fmt.Errorf("truncated tensor header")
		}
		n := int(binary.LittleEndian.Uint16(b))
		b = b[2:]
		if len(b) < n+1 {
			return nil, fmt.Errorf("truncated tensor name")
		}
		t := optim.NamedTensor{Name: string(b[:n])}
		nd := int(b[n])
		b = b[n+1:]
		if len(b) < 4*nd {
			return nil, fmt.Errorf("%s: truncated shape", t.Name)
		}
		size := 1
		for i := 0; i < nd; i++ {
			d := int(binary.LittleEndian.Uint32(b[4*i:]))
			if d < 0 || (d > 0 && size > math.MaxInt32/d) {
				return nil, fmt.Errorf("%s: dimension %d too large", t.Name, d)
			}
			size *= d
			t.Shape = append(t.Shape, d)
		}
		b = b[4*nd:]
		if len(b) < 4*size {
			return nil, fmt.Errorf("%s: %d values announced, %d bytes left", t.Name, size, len(b))
		}
		t.Data = make([]float32, size)
		for i := range t.Data {
			t.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		b = b[4*size:]
		out = append(out, t)
	}
	return out, nil
}

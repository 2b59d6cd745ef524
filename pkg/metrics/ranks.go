package metrics

import (
	"math"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// stepBuckets are the upper bounds, in seconds, of the step-time
// histograms: 10 ms doubling to about 5.5 minutes, which covers a toy
// model on a laptop and a large one on slow links.
var stepBuckets = prometheus.ExponentialBuckets(0.01, 2, 16)

// Bounds on what Ranks keeps. Reports come from the wire: a bad or
// hostile worker must not grow the map without end.
const (
	maxSeries = 1 << 14
	// maxEnded is how many ranks that are over stay exported, so that a
	// scrape after the end still sees their last figures.
	maxEnded = 256
	// maxJobName is the longest job name a coordinator accepts.
	maxJobName = 253
)

// rankKey names one rank of a job, whatever the attempt.
type rankKey struct {
	job  string
	rank int32
}

// rankSeries is what Ranks knows of one rank.
type rankSeries struct {
	attempt int32
	// lastStep is the last step counted in attempt; a report of a step
	// not after it is a replay.
	lastStep int64
	step     int64
	loss     float64
	tokensPS float64
	stepSec  float64
	// sent and recv are bytes summed over every step counted, across
	// attempts, so they only grow (Prometheus counters).
	sent, recv float64
	hist       histogram
	ended      bool
	// touched orders ended ranks for eviction.
	touched uint64
}

// histogram is a Prometheus histogram kept by hand, so that collectors can
// export it as a const metric with the series' other figures.
type histogram struct {
	count   uint64
	sum     float64
	buckets []uint64 // per bound of stepBuckets, not cumulative
}

func (h *histogram) observe(v float64) {
	if h.buckets == nil {
		h.buckets = make([]uint64, len(stepBuckets))
	}
	h.count++
	h.sum += v
	if i, _ := slices.BinarySearch(stepBuckets, v); i < len(stepBuckets) {
		h.buckets[i]++
	}
}

// cumulative returns the histogram's buckets as Prometheus wants them:
// upper bound → observations at or below it.
func (h *histogram) cumulative() map[float64]uint64 {
	out := make(map[float64]uint64, len(stepBuckets))
	var n uint64
	for i, b := range stepBuckets {
		if h.buckets != nil {
			n += h.buckets[i]
		}
		out[b] = n
	}
	return out
}

// Ranks accumulates ranks' reports. Safe for concurrent use.
type Ranks struct {
	mu    sync.Mutex
	m     map[rankKey]*rankSeries
	clock uint64
}

// NewRanks returns an empty Ranks.
func NewRanks() *Ranks { return &Ranks{m: map[rankKey]*rankSeries{}} }

// Observe counts one report. A step already counted for the rank's
// attempt, or a report of an older attempt, changes nothing.
func (r *Ranks) Observe(rep *ternv1.RankReport) {
	if rep == nil || rep.Job == "" || len(rep.Job) > maxJobName || !utf8.ValidString(rep.Job) || rep.Rank < 0 || rep.Attempt < 1 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := rankKey{rep.Job, rep.Rank}
	s := r.m[k]
	if s == nil {
		if len(r.m) >= maxSeries {
			r.evictLocked()
			if len(r.m) >= maxSeries {
				return
			}
		}
		s = &rankSeries{}
		r.m[k] = s
	}
	switch {
	case rep.Attempt < s.attempt:
		return
	case rep.Attempt > s.attempt:
		s.attempt, s.lastStep, s.ended = rep.Attempt, 0, false
	}
	r.clock++
	s.touched = r.clock
	switch ev := rep.Event.(type) {
	case *ternv1.RankReport_Step:
		st := ev.Step
		if st == nil || st.Step <= s.lastStep {
			return
		}
		s.lastStep, s.step = st.Step, st.Step
		s.loss, s.tokensPS = st.Loss, st.TokensPerSecond
		if sec := st.StepMs / 1000; sec >= 0 && !math.IsInf(sec, 0) && !math.IsNaN(sec) {
			s.stepSec = sec
			s.hist.observe(sec)
		}
		if st.BytesSent > 0 {
			s.sent += float64(st.BytesSent)
		}
		if st.BytesRecv > 0 {
			s.recv += float64(st.BytesRecv)
		}
	case *ternv1.RankReport_Finished, *ternv1.RankReport_Failed:
		s.ended = true
		r.evictLocked()
	}
}

// evictLocked drops the ranks that ended longest ago beyond maxEnded.
func (r *Ranks) evictLocked() {
	var ended []rankKey
	for k, s := range r.m {
		if s.ended {
			ended = append(ended, k)
		}
	}
	if len(ended) <= maxEnded {
		return
	}
	slices.SortFunc(ended, func(a, b rankKey) int {
		if r.m[a].touched < r.m[b].touched {
			return -1
		}
		return 1
	})
	for _, k := range ended[:len(ended)-maxEnded] {
		delete(r.m, k)
	}
}

// rankSample is a copy of one rank's series, for a scrape.
type rankSample struct {
	rankKey
	rankSeries
}

// samples copies every series, by job then rank, dropping those of jobs
// keep refuses (jobs that no longer exist) first.
func (r *Ranks) samples(keep func(job string) bool) []rankSample {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]rankSample, 0, len(r.m))
	for k, s := range r.m {
		if keep != nil && !keep(k.job) {
			delete(r.m, k)
			continue
		}
		c := *s
		c.hist.buckets = slices.Clone(s.hist.buckets)
		out = append(out, rankSample{k, c})
	}
	slices.SortFunc(out, func(a, b rankSample) int {
		if c := strings.Compare(a.job, b.job); c != 0 {
			return c
		}
		return int(a.rank) - int(b.rank)
	})
	return out
}

// ServerOption is a gRPC server option that feeds r with the reports
// workers send on the coordinator's Session streams.
func (r *Ranks) ServerOption() grpc.ServerOption {
	return grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if info.FullMethod != ternv1.CoordinatorService_Session_FullMethodName {
			return h(srv, ss)
		}
		return h(srv, &observedStream{ServerStream: ss, r: r})
	})
}

// observedStream passes each received report to Ranks.
type observedStream struct {
	grpc.ServerStream
	r *Ranks
}

func (s *observedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if req, ok := m.(*ternv1.SessionRequest); ok {
		if rep := req.GetReport(); rep != nil {
			s.r.Observe(rep)
		}
	}
	return nil
}

// send returns a function that sends a metric built without error; one
// that failed (a label that is not UTF-8) is left out rather than
// failing the scrape.
func send(ch chan<- prometheus.Metric) func(prometheus.Metric, error) {
	return func(m prometheus.Metric, err error) {
		if err == nil {
			ch <- m
		}
	}
}

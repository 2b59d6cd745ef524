package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// WorkerSource is what the worker collector reads at scrape time;
// *worker.Agent has it.
type WorkerSource interface {
	Running() int
}

// Worker is a worker's collector.
type Worker struct {
	src   WorkerSource
	slots int
	ranks *Ranks

	slotsDesc, running                                 *prometheus.Desc
	step, loss, tokensPS, stepSec, attempt, wire, hist *prometheus.Desc
}

// NewWorker returns a collector of a worker with slots slots and of its
// ranks' reports counted in ranks (fed by worker.Config.Observe). Its
// metrics:
//
//	tern_worker_slots                             this worker's slots
//	tern_worker_running_ranks                     ranks running now
//	tern_rank_step{job,rank}                      last step reported
//	tern_rank_loss{job,rank}                      its training loss
//	tern_rank_tokens_per_second{job,rank}         its throughput
//	tern_rank_last_step_seconds{job,rank}         its wall time
//	tern_rank_step_duration_seconds{job,rank}     histogram of step times
//	tern_rank_attempt{job,rank}                   the job attempt the rank belongs to
//	tern_rank_wire_bytes_total{job,rank,direction,kind}  bytes sent and received
func NewWorker(src WorkerSource, slots int, ranks *Ranks) *Worker {
	jr := []string{"job", "rank"}
	return &Worker{
		src: src, slots: slots, ranks: ranks,
		slotsDesc: prometheus.NewDesc("tern_worker_slots", "Ranks this worker runs at once.", nil, nil),
		running:   prometheus.NewDesc("tern_worker_running_ranks", "Ranks running on this worker now.", nil, nil),
		step:      prometheus.NewDesc("tern_rank_step", "The last step a rank reported.", jr, nil),
		loss:      prometheus.NewDesc("tern_rank_loss", "Training loss of the last step a rank reported.", jr, nil),
		tokensPS:  prometheus.NewDesc("tern_rank_tokens_per_second", "Throughput of the last step a rank reported.", jr, nil),
		stepSec:   prometheus.NewDesc("tern_rank_last_step_seconds", "Wall time of the last step a rank reported.", jr, nil),
		hist:      prometheus.NewDesc("tern_rank_step_duration_seconds", "Wall time of a rank's training steps.", jr, nil),
		attempt:   prometheus.NewDesc("tern_rank_attempt", "The job attempt a rank belongs to (1 = first launch).", jr, nil),
		wire:      prometheus.NewDesc("tern_rank_wire_bytes_total", "Bytes a rank put on (sent) and took off (received) the wire.", []string{"job", "rank", "direction", "kind"}, nil),
	}
}

// Describe sends every metric's description.
func (w *Worker) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{w.slotsDesc, w.running, w.step, w.loss, w.tokensPS, w.stepSec, w.hist, w.attempt, w.wire} {
		ch <- d
	}
}

// Collect reads the worker's ranks.
func (w *Worker) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		send(ch)(prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	gauge(w.slotsDesc, float64(w.slots))
	gauge(w.running, float64(w.src.Running()))
	for _, s := range w.ranks.samples(nil) {
		r := rankLabel(s.rank)
		gauge(w.step, float64(s.step), s.job, r)
		gauge(w.loss, s.loss, s.job, r)
		gauge(w.tokensPS, s.tokensPS, s.job, r)
		gauge(w.stepSec, s.stepSec, s.job, r)
		gauge(w.attempt, float64(s.attempt), s.job, r)
		send(ch)(prometheus.NewConstHistogram(w.hist, s.hist.count, s.hist.sum, s.hist.cumulative(), s.job, r))
		send(ch)(prometheus.NewConstMetric(w.wire, prometheus.CounterValue, s.sent, s.job, r, "sent", "gradient"))
		send(ch)(prometheus.NewConstMetric(w.wire, prometheus.CounterValue, s.recv, s.job, r, "received", "gradient"))
	}
}

func rankLabel(r int32) string { return strconv.Itoa(int(r)) }

package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// CoordinatorSource is what the coordinator collector reads at scrape
// time; *coordinator.Coordinator has it.
type CoordinatorSource interface {
	Jobs() []*ternv1.Job
	Workers() []*ternv1.Worker
	Leading() bool
}

// Coordinator is the coordinator's collector.
type Coordinator struct {
	src   CoordinatorSource
	ranks *Ranks

	leader, jobs, workers, slots, usedSlots               *prometheus.Desc
	committed, steps, loss, tokensPS, restarts, attempt   *prometheus.Desc
	ranksDesc, stepSeconds, wireBytes, rankStep, rankLoss *prometheus.Desc
}

// NewCoordinator returns a collector of src's jobs and workers and of the
// ranks' reports counted in ranks (fed by ranks.ServerOption on src's gRPC
// server). Its metrics:
//
//	tern_coordinator_leader                    1 while this coordinator leads
//	tern_jobs{phase}                           jobs in each phase
//	tern_workers{state}                        registered workers, connected or disconnected
//	tern_worker_slots{worker}                  a worker's slots
//	tern_worker_used_slots{worker}             slots held by running ranks
//	tern_job_committed_step{job}               last step every rank completed
//	tern_job_steps{job}                        spec.steps
//	tern_job_loss{job}                         training loss of the last step reported
//	tern_job_tokens_per_second{job}            throughput of all replicas
//	tern_job_restarts_total{job}               relaunches after failures
//	tern_job_attempt{job}                      current attempt (1 = first launch)
//	tern_job_ranks{job}                        data × pipeline
//	tern_job_step_duration_seconds{job}        histogram of rank 0's step times
//	tern_job_wire_bytes_total{job,direction,kind}  bytes all ranks sent/received
//	tern_rank_step{job,rank}                   each rank's last reported step
//	tern_rank_loss{job,rank}                   each rank's last reported loss
//
// kind is "gradient": the gradient exchange between replicas, the traffic
// the ranks report per step.
func NewCoordinator(src CoordinatorSource, ranks *Ranks) *Coordinator {
	job := []string{"job"}
	return &Coordinator{
		src: src, ranks: ranks,
		leader:      prometheus.NewDesc("tern_coordinator_leader", "1 while this coordinator leads, 0 while it stands by.", nil, nil),
		jobs:        prometheus.NewDesc("tern_jobs", "Jobs by phase.", []string{"phase"}, nil),
		workers:     prometheus.NewDesc("tern_workers", "Registered workers, by whether their session is connected.", []string{"state"}, nil),
		slots:       prometheus.NewDesc("tern_worker_slots", "Slots of a registered worker.", []string{"worker"}, nil),
		usedSlots:   prometheus.NewDesc("tern_worker_used_slots", "Slots of a worker held by ranks of running jobs.", []string{"worker"}, nil),
		committed:   prometheus.NewDesc("tern_job_committed_step", "The last step every rank of the job's current attempt completed.", job, nil),
		steps:       prometheus.NewDesc("tern_job_steps", "Steps the job trains for (spec.steps).", job, nil),
		loss:        prometheus.NewDesc("tern_job_loss", "Training loss of the job's last reported step.", job, nil),
		tokensPS:    prometheus.NewDesc("tern_job_tokens_per_second", "Training throughput of the job's last step, all replicas together.", job, nil),
		restarts:    prometheus.NewDesc("tern_job_restarts_total", "Times the job was relaunched after a failure.", job, nil),
		attempt:     prometheus.NewDesc("tern_job_attempt", "The job's current attempt (0: none launched yet).", job, nil),
		ranksDesc:   prometheus.NewDesc("tern_job_ranks", "Ranks of the job: data parallel × pipeline parallel.", job, nil),
		stepSeconds: prometheus.NewDesc("tern_job_step_duration_seconds", "Wall time of the job's training steps, as rank 0 reports them.", job, nil),
		wireBytes:   prometheus.NewDesc("tern_job_wire_bytes_total", "Bytes the job's ranks put on (sent) and took off (received) the wire.", []string{"job", "direction", "kind"}, nil),
		rankStep:    prometheus.NewDesc("tern_rank_step", "The last step a rank reported.", []string{"job", "rank"}, nil),
		rankLoss:    prometheus.NewDesc("tern_rank_loss", "Training loss of the last step a rank reported.", []string{"job", "rank"}, nil),
	}
}

// Describe sends every metric's description.
func (c *Coordinator) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.leader, c.jobs, c.workers, c.slots, c.usedSlots, c.committed, c.steps, c.loss, c.tokensPS,
		c.restarts, c.attempt, c.ranksDesc, c.stepSeconds, c.wireBytes, c.rankStep, c.rankLoss} {
		ch <- d
	}
}

// Collect reads the coordinator's jobs and workers and the ranks' counts.
func (c *Coordinator) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		send(ch)(prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	gauge(c.leader, boolFloat(c.src.Leading()))

	jobs := c.src.Jobs()
	byPhase := map[ternv1.JobPhase]int{}
	exists := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		byPhase[j.Phase]++
		exists[j.Name] = true
		gauge(c.committed, float64(j.CommittedStep), j.Name)
		gauge(c.steps, float64(j.Steps), j.Name)
		gauge(c.loss, j.LastLoss, j.Name)
		gauge(c.tokensPS, j.TokensPerSecond, j.Name)
		send(ch)(prometheus.NewConstMetric(c.restarts, prometheus.CounterValue, float64(j.Restarts), j.Name))
		gauge(c.attempt, float64(j.Attempt), j.Name)
		gauge(c.ranksDesc, float64(j.DataParallel*j.PipelineParallel), j.Name)
	}
	// Every phase, zeros included, so that a phase emptying reads 0
	// rather than vanishing.
	for v, name := range ternv1.JobPhase_name {
		p := ternv1.JobPhase(v)
		if p == ternv1.JobPhase_JOB_PHASE_UNSPECIFIED {
			continue
		}
		gauge(c.jobs, float64(byPhase[p]), phaseLabel(name))
	}

	connected := 0
	ws := c.src.Workers()
	for _, w := range ws {
		if w.Connected {
			connected++
		}
		gauge(c.slots, float64(w.Slots), w.Name)
		gauge(c.usedSlots, float64(w.UsedSlots), w.Name)
	}
	gauge(c.workers, float64(connected), "connected")
	gauge(c.workers, float64(len(ws)-connected), "disconnected")

	// Per job: bytes summed over its ranks; step times from rank 0.
	type jobSum struct{ sent, recv float64 }
	sums := map[string]*jobSum{}
	var order []string
	for _, s := range c.ranks.samples(func(job string) bool { return exists[job] }) {
		js := sums[s.job]
		if js == nil {
			js = &jobSum{}
			sums[s.job] = js
			order = append(order, s.job)
		}
		js.sent += s.sent
		js.recv += s.recv
		if s.rank == 0 {
			send(ch)(prometheus.NewConstHistogram(c.stepSeconds, s.hist.count, s.hist.sum, s.hist.cumulative(), s.job))
		}
		r := rankLabel(s.rank)
		gauge(c.rankStep, float64(s.step), s.job, r)
		gauge(c.rankLoss, s.loss, s.job, r)
	}
	for _, job := range order {
		send(ch)(prometheus.NewConstMetric(c.wireBytes, prometheus.CounterValue, sums[job].sent, job, "sent", "gradient"))
		send(ch)(prometheus.NewConstMetric(c.wireBytes, prometheus.CounterValue, sums[job].recv, job, "received", "gradient"))
	}
}

// phaseLabel turns JOB_PHASE_RUNNING into running, as ternctl shows it.
func phaseLabel(enumName string) string {
	return strings.ToLower(strings.TrimPrefix(enumName, "JOB_PHASE_"))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

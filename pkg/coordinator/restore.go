package coordinator

import (
	"context"
	"fmt"

	"github.com/ternml/tern/pkg/coordinator/store"
	"github.com/ternml/tern/pkg/spec"
)

// restoreJobs loads every job from etcd, as a new leader must: the
// previous one may have died at any point, and each job's record (with its
// latest attempt's) is all that is known for sure. Run then carries out
// what Reconcile says each phase needs; every such action is idempotent.
func (l *loop) restoreJobs(ctx context.Context) error {
	cctx, cancel := etcdCtx(ctx)
	defer cancel()
	recs, _, err := l.st.ListJobs(cctx)
	if err != nil {
		return fmt.Errorf("coordinator: restore jobs: %w", err)
	}
	for _, rec := range recs {
		e, err := l.restoreJob(cctx, rec)
		if err != nil {
			// Driving a record we cannot read would be worse than leaving
			// it: it stays in etcd for a person to inspect, and its name
			// stays taken.
			l.log.Error("job not restored", "job", rec.Name, "err", err)
			l.broken[rec.Name] = err.Error()
			continue
		}
		l.jobs[rec.Name] = e
	}
	if len(recs) > 0 {
		l.log.Info("jobs restored from etcd", "jobs", len(l.jobs), "unreadable", len(l.broken))
	}
	return nil
}

func (l *loop) restoreJob(ctx context.Context, rec store.Job) (*entry, error) {
	j, meta, err := decodeState(rec.State)
	if err != nil {
		return nil, err
	}
	ts, err := spec.Parse(rec.Spec, nil)
	if err != nil {
		return nil, fmt.Errorf("stored spec: %w", err)
	}
	e := &entry{name: rec.Name, j: j, spec: ts, specJSON: rec.Spec, revision: rec.Revision, persisted: j.Attempt, meta: meta}
	if err := l.loadSnapshot(ctx, e); err != nil {
		return nil, fmt.Errorf("in-memory snapshot: %w", err)
	}
	if j.Attempt > 0 {
		a, err := l.st.GetAttempt(ctx, rec.Name, j.Attempt)
		if err != nil {
			return nil, fmt.Errorf("attempt %d: %w", j.Attempt, err)
		}
		run, err := decodeAttempt(a.Value)
		if err != nil {
			return nil, fmt.Errorf("decode attempt %d: %w", j.Attempt, err)
		}
		if run.n != j.Attempt || run.assignment.Validate(j.Layout().World()) != nil {
			return nil, fmt.Errorf("attempt record %d does not match the job (attempt %d, %d ranks)", run.n, j.Attempt, j.Layout().World())
		}
		// Ranks of a job that let its slots go were told to stop by
		// the coordinator before; none is waited for.
		run.settled = !j.HoldsSlots()
		e.run = run
	}
	return e, nil
}

// storeJob is the record to write over the one last written.
func storeJob(e *entry, state []byte) store.Job {
	return store.Job{Name: e.name, Spec: e.specJSON, State: state, Revision: e.revision}
}

package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Batch collects writes that commit together in one fenced transaction:
// all of them or none. Build it with Leader.Batch, add writes, then Commit.
// Argument errors are kept and returned by Commit, so a chain of adds needs
// one check. A Batch is not safe for concurrent use.
type Batch struct {
	l     *Leader
	conds []cond
	ops   []clientv3.Op
	what  []string
	bytes int
	err   error
}

type condKind int

const (
	condExists condKind = iota + 1 // key must exist
	condAbsent                     // key must not exist
	condModRev                     // key's mod revision must equal rev (0: absent)
)

// cond is one precondition of a batch, kept with what it protects so that
// a failed transaction can say which one failed.
type cond struct {
	kind condKind
	key  string
	rev  int64
	what string
}

func (c cond) cmp() clientv3.Cmp {
	switch c.kind {
	case condExists:
		return clientv3.Compare(clientv3.CreateRevision(c.key), ">", 0)
	case condAbsent:
		return clientv3.Compare(clientv3.CreateRevision(c.key), "=", 0)
	default:
		return clientv3.Compare(clientv3.ModRevision(c.key), "=", c.rev)
	}
}

// check reports why the condition fails against the key's current state,
// or nil if it holds.
func (c cond) check(exists bool, modRev int64) error {
	switch c.kind {
	case condExists:
		if !exists {
			return fmt.Errorf("%s: %w", c.what, ErrNotFound)
		}
	case condAbsent:
		if exists {
			return fmt.Errorf("%s: %w", c.what, ErrExists)
		}
	case condModRev:
		if modRev != c.rev {
			if c.rev > 0 && !exists {
				return fmt.Errorf("%s: %w", c.what, ErrNotFound)
			}
			return fmt.Errorf("%s: read at revision %d, now at %d: %w", c.what, c.rev, modRev, ErrConflict)
		}
	}
	return nil
}

// Batch starts an empty batch of writes.
func (l *Leader) Batch() *Batch { return &Batch{l: l} }

func (b *Batch) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

func (b *Batch) addCond(c cond) {
	// A job created in this batch satisfies "the job exists" for the
	// sub-records written with it, whichever order they were added in.
	kept := b.conds[:0]
	for _, have := range b.conds {
		switch {
		case have == c:
			return
		case have.key == c.key && have.kind == condAbsent && c.kind == condExists:
			return
		case have.key == c.key && have.kind == condExists && c.kind == condAbsent:
			continue
		}
		kept = append(kept, have)
	}
	b.conds = append(kept, c)
}

func (b *Batch) put(key string, val []byte, what string, opts ...clientv3.OpOption) {
	b.ops = append(b.ops, clientv3.OpPut(key, string(val), opts...))
	b.what = append(b.what, what)
	b.bytes += len(key) + len(val)
}

func (b *Batch) del(key string, what string, opts ...clientv3.OpOption) {
	b.ops = append(b.ops, clientv3.OpDelete(key, opts...))
	b.what = append(b.what, what)
	b.bytes += len(key)
}

// checkJob validates a job name and the size of values stored with it.
func (b *Batch) checkJob(name string, vals map[string][]byte) bool {
	if err := checkName("job", name); err != nil {
		b.fail(err)
		return false
	}
	for what, v := range vals {
		if err := b.l.s.checkValue(fmt.Sprintf("job %q %s", name, what), v); err != nil {
			b.fail(err)
			return false
		}
	}
	return true
}

// CreateJob adds a new job record; the commit fails with ErrExists if the
// name is taken.
func (b *Batch) CreateJob(name string, spec, state []byte) {
	if !b.checkJob(name, map[string][]byte{"spec": spec, "state": state}) {
		return
	}
	rec, err := encodeJob(spec, state)
	if err != nil {
		b.fail(fmt.Errorf("encode job %q: %w", name, err))
		return
	}
	what := fmt.Sprintf("job %q", name)
	b.addCond(cond{kind: condAbsent, key: b.l.s.jobKey(name), what: what})
	b.put(b.l.s.jobKey(name), rec, "create "+what)
}

// UpdateJob replaces job's spec and state if the record is still at
// job.Revision; otherwise the commit fails with ErrConflict (or ErrNotFound
// if it was deleted).
func (b *Batch) UpdateJob(job Job) {
	if !b.checkJob(job.Name, map[string][]byte{"spec": job.Spec, "state": job.State}) {
		return
	}
	if job.Revision <= 0 {
		b.fail(fmt.Errorf("update job %q: revision %d; pass the Job as read (its Revision is the version to replace): %w", job.Name, job.Revision, ErrInvalid))
		return
	}
	rec, err := encodeJob(job.Spec, job.State)
	if err != nil {
		b.fail(fmt.Errorf("encode job %q: %w", job.Name, err))
		return
	}
	what := fmt.Sprintf("job %q", job.Name)
	b.addCond(cond{kind: condModRev, key: b.l.s.jobKey(job.Name), rev: job.Revision, what: what})
	b.put(b.l.s.jobKey(job.Name), rec, "update "+what)
}

// DeleteJob removes a job with its attempts, assignment and committed step.
// With revision > 0 it deletes only if the record is still at that
// revision; with 0 it deletes whatever is there, and fails with ErrNotFound
// if there is no such job.
func (b *Batch) DeleteJob(name string, revision int64) {
	if !b.checkJob(name, nil) {
		return
	}
	s := b.l.s
	what := fmt.Sprintf("job %q", name)
	if revision > 0 {
		b.addCond(cond{kind: condModRev, key: s.jobKey(name), rev: revision, what: what})
	} else {
		b.addCond(cond{kind: condExists, key: s.jobKey(name), what: what})
	}
	b.del(s.jobKey(name), "delete "+what)
	b.del(s.attemptsPrefix(name), "delete attempts of "+what, clientv3.WithPrefix())
	b.del(s.assignmentKey(name), "delete assignment of "+what)
	b.del(s.committedKey(name), "delete committed step of "+what)
	b.del(s.snapshotKey(name), "delete committed snapshot of "+what)
}

// PutAttempt stores attempt n of an existing job (ErrNotFound otherwise).
func (b *Batch) PutAttempt(job string, n int, value []byte) {
	if !b.checkJob(job, map[string][]byte{fmt.Sprintf("attempt %d", n): value}) {
		return
	}
	if err := checkAttempt(n); err != nil {
		b.fail(fmt.Errorf("job %q: %w", job, err))
		return
	}
	s := b.l.s
	b.addCond(cond{kind: condExists, key: s.jobKey(job), what: fmt.Sprintf("job %q", job)})
	b.put(s.attemptKey(job, n), value, fmt.Sprintf("put attempt %d of job %q", n, job))
}

// PutAssignment sets the assignment of an existing job.
func (b *Batch) PutAssignment(job string, value []byte) {
	if !b.checkJob(job, map[string][]byte{"assignment": value}) {
		return
	}
	s := b.l.s
	b.addCond(cond{kind: condExists, key: s.jobKey(job), what: fmt.Sprintf("job %q", job)})
	b.put(s.assignmentKey(job), value, fmt.Sprintf("put assignment of job %q", job))
}

// DeleteAssignment removes job's assignment, if any.
func (b *Batch) DeleteAssignment(job string) {
	if !b.checkJob(job, nil) {
		return
	}
	b.del(b.l.s.assignmentKey(job), fmt.Sprintf("delete assignment of job %q", job))
}

// CommitStep records step (with its snapshot manifest) as job's committed
// step. prev is the committed step as read (zero Committed if none); the
// commit fails with ErrConflict if it changed since, and step must be newer
// than prev.Step (ErrStaleStep), so the committed step never goes back.
func (b *Batch) CommitStep(job string, prev Committed, step uint64, manifest []byte) {
	if !b.checkJob(job, map[string][]byte{"manifest": manifest}) {
		return
	}
	if prev.Revision != 0 && step <= prev.Step {
		b.fail(fmt.Errorf("commit step %d of job %q: committed step is %d: %w", step, job, prev.Step, ErrStaleStep))
		return
	}
	rec, err := json.Marshal(committedRecord{V: recordVersion, Step: step, Manifest: manifest})
	if err != nil {
		b.fail(fmt.Errorf("encode committed step of job %q: %w", job, err))
		return
	}
	s := b.l.s
	b.addCond(cond{kind: condExists, key: s.jobKey(job), what: fmt.Sprintf("job %q", job)})
	b.addCond(cond{kind: condModRev, key: s.committedKey(job), rev: prev.Revision, what: fmt.Sprintf("committed step of job %q", job)})
	b.put(s.committedKey(job), rec, fmt.Sprintf("commit step %d of job %q", step, job))
}

// CommitSnapshot makes step, with its peer manifest, job's committed
// in-memory snapshot, on the condition that the committed snapshot is
// still prev (read by the caller; Revision 0 for none) and step is newer:
// committed snapshot steps only grow (research fault-tolerance.md §9.1).
func (b *Batch) CommitSnapshot(job string, prev Committed, step uint64, manifest []byte) {
	if !b.checkJob(job, map[string][]byte{"snapshot manifest": manifest}) {
		return
	}
	if prev.Revision != 0 && step <= prev.Step {
		b.fail(fmt.Errorf("commit snapshot step %d of job %q: committed snapshot step is %d: %w", step, job, prev.Step, ErrStaleStep))
		return
	}
	rec, err := json.Marshal(committedRecord{V: recordVersion, Step: step, Manifest: manifest})
	if err != nil {
		b.fail(fmt.Errorf("encode committed snapshot of job %q: %w", job, err))
		return
	}
	s := b.l.s
	b.addCond(cond{kind: condExists, key: s.jobKey(job), what: fmt.Sprintf("job %q", job)})
	b.addCond(cond{kind: condModRev, key: s.snapshotKey(job), rev: prev.Revision, what: fmt.Sprintf("committed snapshot of job %q", job)})
	b.put(s.snapshotKey(job), rec, fmt.Sprintf("commit snapshot step %d of job %q", step, job))
}

// Commit applies the batch in one transaction guarded by the leader fence
// and the batch's preconditions, and returns the revision it committed at.
// On failure nothing is applied: ErrNotLeader if the fence failed (checked
// first), else the first failed precondition (ErrNotFound, ErrExists,
// ErrConflict).
func (b *Batch) Commit(ctx context.Context) (int64, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(b.ops) == 0 {
		return 0, fmt.Errorf("commit: the batch has no writes: %w", ErrInvalid)
	}
	desc := b.describe()
	if len(b.ops) > maxTxnOps || len(b.conds)+1 > maxTxnOps {
		return 0, fmt.Errorf("commit %s: %d writes and %d conditions, etcd allows %d of each per transaction; split the batch: %w",
			desc, len(b.ops), len(b.conds)+1, maxTxnOps, ErrTooLarge)
	}
	if b.bytes > txnBytesLimit {
		return 0, fmt.Errorf("commit %s: %d bytes of keys and values, etcd takes at most %d per request; split the batch: %w",
			desc, b.bytes, txnBytesLimit, ErrTooLarge)
	}
	l := b.l
	cmps := make([]clientv3.Cmp, 0, len(b.conds)+1)
	cmps = append(cmps, l.fenceCmp())
	// On failure, read the leader key and every guarded key in the same
	// revision, to tell which comparison failed.
	orElse := make([]clientv3.Op, 0, len(b.conds)+1)
	orElse = append(orElse, clientv3.OpGet(l.key))
	for _, c := range b.conds {
		cmps = append(cmps, c.cmp())
		orElse = append(orElse, clientv3.OpGet(c.key))
	}
	resp, err := l.s.cli.Txn(ctx).If(cmps...).Then(b.ops...).Else(orElse...).Commit()
	if err != nil {
		return 0, fmt.Errorf("commit %s: %w", desc, wrapEtcd(err))
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	return 0, fmt.Errorf("commit %s: %w", desc, b.diagnose(resp))
}

// diagnose names the comparison that made a transaction fail.
func (b *Batch) diagnose(resp *clientv3.TxnResponse) error {
	if len(resp.Responses) != len(b.conds)+1 {
		return fmt.Errorf("transaction failed and etcd returned %d reads for %d comparisons", len(resp.Responses), len(b.conds)+1)
	}
	lk := resp.Responses[0].GetResponseRange().GetKvs()
	if len(lk) == 0 || lk[0].CreateRevision != b.l.fence {
		return fmt.Errorf("fence %d of %q: %w", b.l.fence, b.l.name, ErrNotLeader)
	}
	for i, c := range b.conds {
		kvs := resp.Responses[i+1].GetResponseRange().GetKvs()
		var modRev int64
		if len(kvs) > 0 {
			modRev = kvs[0].ModRevision
		}
		if err := c.check(len(kvs) > 0, modRev); err != nil {
			return err
		}
	}
	// Unreachable while etcd evaluates compares as documented.
	return fmt.Errorf("transaction refused but every condition holds on re-read: %w", ErrConflict)
}

// describe summarises the batch for error messages.
func (b *Batch) describe() string {
	switch len(b.what) {
	case 0:
		return "empty batch"
	case 1:
		return b.what[0]
	case 2, 3:
		return strings.Join(b.what, ", ")
	default:
		return fmt.Sprintf("%s and %d more writes", b.what[0], len(b.what)-1)
	}
}

// CreateJob creates a job record and returns it.
func (l *Leader) CreateJob(ctx context.Context, name string, spec, state []byte) (Job, error) {
	b := l.Batch()
	b.CreateJob(name, spec, state)
	rev, err := b.Commit(ctx)
	if err != nil {
		return Job{}, err
	}
	return Job{Name: name, Spec: spec, State: state, Revision: rev, Created: rev}, nil
}

// UpdateJob replaces spec and state if job is still at job.Revision and
// returns the record as written.
func (l *Leader) UpdateJob(ctx context.Context, job Job) (Job, error) {
	b := l.Batch()
	b.UpdateJob(job)
	rev, err := b.Commit(ctx)
	if err != nil {
		return Job{}, err
	}
	job.Revision = rev
	return job, nil
}

// DeleteJob removes a job and everything stored for it (see Batch.DeleteJob).
func (l *Leader) DeleteJob(ctx context.Context, name string, revision int64) error {
	b := l.Batch()
	b.DeleteJob(name, revision)
	_, err := b.Commit(ctx)
	return err
}

// PutAttempt stores attempt n of an existing job and returns its revision.
func (l *Leader) PutAttempt(ctx context.Context, job string, n int, value []byte) (int64, error) {
	b := l.Batch()
	b.PutAttempt(job, n, value)
	return b.Commit(ctx)
}

// PutAssignment sets an existing job's assignment and returns its revision.
func (l *Leader) PutAssignment(ctx context.Context, job string, value []byte) (int64, error) {
	b := l.Batch()
	b.PutAssignment(job, value)
	return b.Commit(ctx)
}

// commitRetries bounds CommitStep's read-compare-write loop. Only this
// leader writes committed steps, so a conflict means a concurrent commit of
// its own; a few retries settle it.
const commitRetries = 4

// CommitStep makes step job's committed step, reading the current one
// first. Committing the step already committed with the same manifest
// succeeds without writing, so a commit whose reply was lost can be
// retried; an older step fails with ErrStaleStep.
func (l *Leader) CommitStep(ctx context.Context, job string, step uint64, manifest []byte) (Committed, error) {
	return l.commitLoop(ctx, job, step, manifest, l.s.GetCommitted, (*Batch).CommitStep)
}

// CommitSnapshot commits job's in-memory snapshot of step with its
// manifest in one transaction fenced by leadership, after reading the
// current one: the same step and manifest again succeed without writing
// (a retried commit), an older or equal step fails with ErrStaleStep.
func (l *Leader) CommitSnapshot(ctx context.Context, job string, step uint64, manifest []byte) (Committed, error) {
	return l.commitLoop(ctx, job, step, manifest, l.s.GetSnapshot, (*Batch).CommitSnapshot)
}

// commitLoop is the read-compare-write loop of CommitStep and
// CommitSnapshot: get reads the current record, add queues the fenced
// write that compares against it.
func (l *Leader) commitLoop(ctx context.Context, job string, step uint64, manifest []byte,
	get func(context.Context, string) (Committed, error), add func(*Batch, string, Committed, uint64, []byte)) (Committed, error) {
	var err error
	for range commitRetries {
		prev, gerr := get(ctx, job)
		if gerr != nil && !errors.Is(gerr, ErrNotFound) {
			return Committed{}, gerr
		}
		if gerr == nil && prev.Step == step && bytes.Equal(prev.Manifest, manifest) {
			return prev, nil
		}
		b := l.Batch()
		add(b, job, prev, step, manifest)
		var rev int64
		rev, err = b.Commit(ctx)
		if err == nil {
			return Committed{Step: step, Manifest: manifest, Revision: rev}, nil
		}
		if !errors.Is(err, ErrConflict) {
			return Committed{}, err
		}
	}
	return Committed{}, err
}

func isLeaseNotFound(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound)
}

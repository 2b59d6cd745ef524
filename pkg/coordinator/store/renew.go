package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// renewer renews leases one request at a time over one LeaseKeepAlive
// stream shared by all of a Store's callers. clientv3's KeepAliveOnce opens
// a stream per call, which at a thousand workers heartbeating each second
// is a thousand streams a second set up and torn down on both ends; the
// shared stream carries the same requests without that cost.
//
// etcd answers a stream's requests in order, so responses are matched to
// waiters by lease ID, first come first served. A stream that fails fails
// every request waiting on it; the next Refresh opens a new one.
type renewer struct {
	cli *clientv3.Client

	mu     sync.Mutex
	cur    *renewStream
	closed bool
}

// renewStream is one LeaseKeepAlive stream and the requests waiting on it.
type renewStream struct {
	stream pb.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc
	sendMu sync.Mutex // gRPC streams allow one sender at a time

	mu      sync.Mutex
	waiters map[int64][]chan renewResult
	err     error // set once the stream has failed
}

type renewResult struct {
	ttl int64
	err error
}

var errRenewerClosed = errors.New("lease renewals stopped: the store is closed")

// renew sends one keepalive for id and returns the TTL etcd granted (0: the
// lease does not exist).
func (r *renewer) renew(ctx context.Context, id clientv3.LeaseID) (int64, error) {
	rs, err := r.stream()
	if err != nil {
		return 0, err
	}
	ch := make(chan renewResult, 1)
	if err := rs.wait(int64(id), ch); err != nil {
		r.drop(rs)
		return 0, err
	}
	rs.sendMu.Lock()
	err = rs.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)})
	rs.sendMu.Unlock()
	if err != nil {
		rs.fail(err)
		r.drop(rs)
		return 0, err
	}
	select {
	case res := <-ch:
		return res.ttl, res.err
	case <-ctx.Done():
		// The answer, when it comes, goes to the next waiter for id, who
		// is as well served by it: a renewal is a renewal.
		rs.forget(int64(id), ch)
		return 0, ctx.Err()
	}
}

// stream returns the current stream, opening one if there is none.
func (r *renewer) stream() (*renewStream, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errRenewerClosed
	}
	if r.cur != nil {
		return r.cur, nil
	}
	// The stream outlives any one caller's ctx; close ends it.
	ctx, cancel := context.WithCancel(context.Background())
	s, err := pb.NewLeaseClient(r.cli.ActiveConnection()).LeaseKeepAlive(clientv3.WithRequireLeader(ctx))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open lease keepalive stream: %w", err)
	}
	rs := &renewStream{stream: s, cancel: cancel, waiters: map[int64][]chan renewResult{}}
	r.cur = rs
	go rs.receive()
	return rs, nil
}

// drop forgets rs if it is still current, so the next call opens another.
func (r *renewer) drop(rs *renewStream) {
	r.mu.Lock()
	if r.cur == rs {
		r.cur = nil
	}
	r.mu.Unlock()
	rs.cancel()
}

// close ends the current stream and refuses later renewals.
func (r *renewer) close() {
	r.mu.Lock()
	rs := r.cur
	r.cur, r.closed = nil, true
	r.mu.Unlock()
	if rs != nil {
		rs.fail(errRenewerClosed)
		rs.cancel()
	}
}

// receive hands each response to the first waiter for its lease, until
// the stream fails.
func (rs *renewStream) receive() {
	for {
		resp, err := rs.stream.Recv()
		if err != nil {
			rs.fail(fmt.Errorf("lease keepalive stream: %w", err))
			rs.cancel()
			return
		}
		rs.mu.Lock()
		q := rs.waiters[resp.ID]
		if len(q) > 0 {
			q[0] <- renewResult{ttl: resp.TTL}
			if len(q) == 1 {
				delete(rs.waiters, resp.ID)
			} else {
				rs.waiters[resp.ID] = q[1:]
			}
		}
		rs.mu.Unlock()
	}
}

// wait queues ch for the next response about id.
func (rs *renewStream) wait(id int64, ch chan renewResult) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.err != nil {
		return rs.err
	}
	rs.waiters[id] = append(rs.waiters[id], ch)
	return nil
}

// forget removes ch from id's queue, if it is still there.
func (rs *renewStream) forget(id int64, ch chan renewResult) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	q := rs.waiters[id]
	for i, c := range q {
		if c == ch {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(rs.waiters, id)
	} else {
		rs.waiters[id] = q
	}
}

// fail ends every waiting request with err.
func (rs *renewStream) fail(err error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.err == nil {
		rs.err = err
	}
	for id, q := range rs.waiters {
		for _, ch := range q {
			ch <- renewResult{err: rs.err}
		}
		delete(rs.waiters, id)
	}
}

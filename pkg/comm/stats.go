package comm

// Counter is a pair of byte counts for one direction: Payload is the bytes of
// message bodies, Framing everything the transport adds around them (headers,
// chunk headers, protocol overhead it can see).
type Counter struct {
	Payload int64 `json:"payload"`
	Framing int64 `json:"framing"`
}

// Total is payload plus framing.
func (c Counter) Total() int64 { return c.Payload + c.Framing }

func (c *Counter) add(o Counter) { c.Payload += o.Payload; c.Framing += o.Framing }

// Stats are the byte counters of one rank since the transport started.
type Stats struct {
	Sent, Recv Counter
	// ByKind splits Sent and Recv by collective kind.
	SentByKind, RecvByKind [numKinds]Counter
	// Dropped counts messages refused for a stale epoch or a foreign job id.
	Dropped int64
}

// Sub returns s minus o: the traffic between two snapshots of the counters.
func (s Stats) Sub(o Stats) Stats {
	d := s
	d.Sent.Payload -= o.Sent.Payload
	d.Sent.Framing -= o.Sent.Framing
	d.Recv.Payload -= o.Recv.Payload
	d.Recv.Framing -= o.Recv.Framing
	for k := range d.SentByKind {
		d.SentByKind[k].Payload -= o.SentByKind[k].Payload
		d.SentByKind[k].Framing -= o.SentByKind[k].Framing
		d.RecvByKind[k].Payload -= o.RecvByKind[k].Payload
		d.RecvByKind[k].Framing -= o.RecvByKind[k].Framing
	}
	d.Dropped -= o.Dropped
	return d
}

// CountSend and CountRecv record one message; transports call them.
func (s *Stats) CountSend(k Kind, c Counter) {
	s.Sent.add(c)
	if k < numKinds {
		s.SentByKind[k].add(c)
	}
}

// CountRecv records one received message.
func (s *Stats) CountRecv(k Kind, c Counter) {
	s.Recv.add(c)
	if k < numKinds {
		s.RecvByKind[k].add(c)
	}
}

package snapshot

// Costs of the in-memory layers for one rank whose state shard is S
// bytes, for plans (`ternctl plan`) and metrics. Fragments are S/k bytes
// rounded up (Code.FragmentBytes).

// PeerSendBytes is what one peer snapshot sends: k+m−1 fragments,
// (k+m−1)/k·S (research fault-tolerance.md §8.2).
func (c Code) PeerSendBytes(stateBytes int64) int64 {
	return int64(c.Fragments()) * int64(c.FragmentBytes(int(stateBytes)))
}

// LocalBytes is the most a rank's Stager keeps: MaxGenerations staged
// generations, each the state plus room for its parity fragments (they
// share one allocation), so 2·(k+m−1)/k·S.
func (c Code) LocalBytes(stateBytes int64) int64 {
	return MaxGenerations * c.PeerSendBytes(stateBytes)
}

// HeldBytes is what a worker holds for others when every rank's state
// is S and the placement is balanced: each rank's k+m−1 fragments spread
// over the other workers, MaxGenerations of them, so per rank the worker
// runs 2·(k+m−1)/k·S (the balanced placement puts the same count on
// every worker; Placement.Load has the exact one).
func (c Code) HeldBytes(stateBytes int64, ranksPerWorker int) int64 {
	return int64(ranksPerWorker) * MaxGenerations * c.PeerSendBytes(stateBytes)
}

package snapshot

import "testing"

func TestCosts(t *testing.T) {
	const s = 8 << 20
	c := Code{K: 8, M: 2}
	if got, want := c.PeerSendBytes(s), int64(9*(s/8)); got != want {
		t.Fatalf("send %d, want %d (1.125 S)", got, want)
	}
	// Local plus held is 4.5 S for k=8 m=2, one rank per worker.
	if got := float64(c.LocalBytes(s)+c.HeldBytes(s, 1)) / s; got != 4.5 {
		t.Fatalf("local + held = %g S, want 4.5", got)
	}
	// Odd sizes round each fragment up.
	if got := (Code{K: 3, M: 1}).PeerSendBytes(10); got != 12 {
		t.Fatalf("10 bytes in 3 fragments send %d, want 12", got)
	}
	// The stager keeps what it is charged: two generations of state plus
	// parity room.
	st := testRankState(1, 1000)
	b, _ := MarshalState(st, 0)
	c = Code{K: 2, M: 2}
	buf, _ := MarshalState(st, c.Reserve(len(b)))
	if got := int64(cap(buf)); got != c.PeerSendBytes(int64(len(b))) {
		t.Fatalf("staged buffer of %d bytes, charged %d", got, c.PeerSendBytes(int64(len(b))))
	}
}

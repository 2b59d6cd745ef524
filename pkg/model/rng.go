package model

import (
	"hash/fnv"
	"math"
)

// rowRNG is a splitmix64 generator (Steele, Lea & Flood, "Fast Splittable
// Pseudorandom Number Generators", OOPSLA 2014; constants from Vigna's
// public-domain reference). Each parameter row gets its own stream seeded by
// (seed, parameter name, global row), so a row's initial values do not depend
// on which stage or vocabulary shard holds it, nor on the order rows are built.
type rowRNG struct {
	state uint64
	spare float64 // second Box–Muller deviate, valid when hasSpare
	has   bool
}

const splitmixGamma = 0x9e3779b97f4a7c15

// mix64 is splitmix64's output function: a bijective avalanche of z.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// newRowRNG derives the stream for one row of one parameter.
func newRowRNG(seed uint64, name string, row int) *rowRNG {
	h := fnv.New64a()
	h.Write([]byte(name))
	s := mix64(seed + splitmixGamma)
	s = mix64(s ^ h.Sum64())
	s = mix64(s ^ (uint64(row) + splitmixGamma))
	return &rowRNG{state: s}
}

func (r *rowRNG) next() uint64 {
	r.state += splitmixGamma
	return mix64(r.state)
}

// uniform returns a float64 in (0, 1]: the top 53 bits, shifted off zero so
// that log(u) below is finite.
func (r *rowRNG) uniform() float64 {
	return (float64(r.next()>>11) + 1) * (1.0 / (1 << 53))
}

// normal returns a standard normal deviate by the Box–Muller transform
// (Box & Muller 1958): for u1, u2 uniform, sqrt(-2 ln u1)·(cos 2πu2, sin 2πu2)
// are two independent N(0,1) values.
func (r *rowRNG) normal() float64 {
	if r.has {
		r.has = false
		return r.spare
	}
	u1, u2 := r.uniform(), r.uniform()
	rad := math.Sqrt(-2 * math.Log(u1))
	s, c := math.Sincos(2 * math.Pi * u2)
	r.spare, r.has = rad*s, true
	return rad * c
}

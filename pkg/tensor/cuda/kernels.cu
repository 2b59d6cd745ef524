// CUDA C kernels of tern's Device interface, compiled at run time by NVRTC
// (see kernels.go). Every kernel is extern "C" so its name survives as-is.
// The math of each kernel and the paper it comes from are documented beside
// its CPU twin in pkg/tensor/cpu_*.go; these are the same formulas, with the
// work split over threads. No kernel uses atomics: every sum has one thread
// (or one fixed reduction tree) that owns it, so results are identical from
// run to run on the same GPU.

#define WARP 32
#define ATTN_MAXD 8   // head widths up to 8·32 = 256
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

// block_sum_d sums one double per thread over a block of at most 1024
// threads, in a fixed tree order; every thread gets the result.
__device__ double block_sum_d(double v) {
    __shared__ double sh[32];
    int lane = threadIdx.x % WARP, wid = threadIdx.x / WARP;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    int nw = (blockDim.x + WARP - 1) / WARP;
    double r = lane < nw ? sh[lane] : 0.0;
    return warp_sum_d(r);
}

__device__ float block_max(float v) {
    __shared__ float sh[32];
    int lane = threadIdx.x % WARP, wid = threadIdx.x / WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    int nw = (blockDim.x + WARP - 1) / WARP;
    float r = lane < nw ? sh[lane] : NEG_INF;
    return warp_max(r);
}

// ---- vectors ----------------------------------------------------------------

extern "C" __global__ void scale_f32(float* x, float a, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        x[i] *= a;
}

// sumsq_partial: block b sums squares (in double) of a fixed strided subset;
// the grid size is fixed by the host, so the order never changes.
extern "C" __global__ void sumsq_partial(const float* x, long long n, double* partial) {
    double s = 0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        double v = x[i];
        s += v * v;
    }
    s = block_sum_d(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// sumsq_final adds the partials in order (one thread: there are few).
extern "C" __global__ void sumsq_final(const double* partial, int nb, double* out) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        double s = 0;
        for (int i = 0; i < nb; i++) s += partial[i];
        out[0] = s;
    }
}

// f32_to_bf16 rounds to bfloat16, nearest-even (as tensor.ToBF16), for the
// BF16 GEMM's operands; NaN stays NaN.
extern "C" __global__ void f32_to_bf16(unsigned short* dst, const float* src, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        unsigned int u = __float_as_uint(src[i]);
        if ((u & 0x7fffffffu) > 0x7f800000u) { dst[i] = 0x7fc0; continue; }
        u += 0x7fffu + ((u >> 16) & 1u);
        dst[i] = (unsigned short)(u >> 16);
    }
}

extern "C" __global__ void gather_columns(float* dst, const float* src, int rows, int srcCols, const int* cols, int r) {
    int row = blockIdx.y;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < r; j += gridDim.x * blockDim.x)
        dst[(long long)row * r + j] = src[(long long)row * srcCols + cols[j]];
}

// ---- embedding ----------------------------------------------------------------

extern "C" __global__ void embedding_fwd(float* out, const float* w, int lo, int hi, int d, const int* tokens) {
    int n = blockIdx.x;
    int t = tokens[n];
    float* dst = out + (long long)n * d;
    if (t < lo || t >= hi) {
        for (int c = threadIdx.x; c < d; c += blockDim.x) dst[c] = 0.f;
        return;
    }
    const float* src = w + (long long)(t - lo) * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) dst[c] = src[c];
}

// embedding_bwd: block b owns the shard row rows[b]; the positions that hold
// that token are pos[start[b]..start[b+1]) in increasing order, so each
// element is summed in token order, as on the CPU.
extern "C" __global__ void embedding_bwd(float* dw, const float* dout, int d, const int* rows, const int* start, const int* pos) {
    int b = blockIdx.x;
    long long row = rows[b];
    int p0 = start[b], p1 = start[b + 1];
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = dw[row * d + c];
        for (int p = p0; p < p1; p++) acc += dout[(long long)pos[p] * d + c];
        dw[row * d + c] = acc;
    }
}

// ---- RMSNorm ----------------------------------------------------------------

extern "C" __global__ void rmsnorm_fwd(float* y, float* rstd, const float* x, const float* w, int n, int d, double eps) {
    int i = blockIdx.x;
    const float* xr = x + (long long)i * d;
    double ss = 0;
    for (int j = threadIdx.x; j < d; j += blockDim.x) { double v = xr[j]; ss += v * v; }
    ss = block_sum_d(ss);
    float r = (float)(1.0 / sqrt(ss / d + eps));
    if (threadIdx.x == 0) rstd[i] = r;
    float* yr = y + (long long)i * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) yr[j] = xr[j] * r * w[j];
}

extern "C" __global__ void rmsnorm_bwd_dx(float* dx, const float* dy, const float* x, const float* w, const float* rstd, int n, int d) {
    int i = blockIdx.x;
    const float* xr = x + (long long)i * d;
    const float* dyr = dy + (long long)i * d;
    float* dxr = dx + (long long)i * d;
    float r = rstd[i];
    double dot = 0;
    for (int j = threadIdx.x; j < d; j += blockDim.x) dot += (double)(dyr[j] * w[j] * xr[j] * r);
    dot = block_sum_d(dot);
    float m = (float)(dot / d);
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float xh = xr[j] * r;
        dxr[j] += r * (dyr[j] * w[j] - xh * m);
    }
}

// rmsnorm_bwd_dw_partial: partial[c, j] = Σ over rows of chunk c of dy·x·r,
// rows in order; rmsnorm_bwd_dw_final adds the chunks in order into dw.
extern "C" __global__ void rmsnorm_bwd_dw_partial(float* partial, const float* dy, const float* x, const float* rstd, int n, int d, int chunkRows) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int c = blockIdx.y;
    if (j >= d) return;
    int r0 = c * chunkRows, r1 = min(n, r0 + chunkRows);
    float s = 0;
    for (int i = r0; i < r1; i++) s += dy[(long long)i * d + j] * x[(long long)i * d + j] * rstd[i];
    partial[(long long)c * d + j] = s;
}

extern "C" __global__ void rmsnorm_bwd_dw_final(float* dw, const float* partial, int d, int chunks) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    float s = dw[j];
    for (int c = 0; c < chunks; c++) s += partial[(long long)c * d + j];
    dw[j] = s;
}

// ---- RoPE ----------------------------------------------------------------

extern "C" __global__ void rope(float* x, const float* cosT, const float* sinT, int n, int t, int heads, int hd, int inverse) {
    int half = hd / 2;
    long long total = (long long)n * heads * half;
    for (long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x; id < total; id += (long long)gridDim.x * blockDim.x) {
        int i = id % half;
        long long rh = id / half;
        int h = rh % heads;
        long long r = rh / heads;
        int p = r % t;
        float c = cosT[p * half + i], s = sinT[p * half + i];
        if (inverse) s = -s;
        float* v = x + r * heads * hd + (long long)h * hd;
        float x0 = v[i], x1 = v[i + half];
        v[i] = x0 * c - x1 * s;
        v[i + half] = x1 * c + x0 * s;
    }
}

// ---- SwiGLU ----------------------------------------------------------------

__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }

extern "C" __global__ void swiglu_fwd(float* h, const float* g, const float* u, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float x = g[i];
        h[i] = x * sigmoidf_(x) * u[i];
    }
}

// swiglu_bwd: dg may alias dh; each thread reads dh[i] before writing dg[i].
extern "C" __global__ void swiglu_bwd(float* dg, float* du, const float* dh, const float* g, const float* u, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float x = g[i], dd = dh[i];
        float s = sigmoidf_(x);
        float ui = u[i];
        du[i] = dd * x * s;
        dg[i] = dd * ui * s * (1.f + x * (1.f - s));
    }
}

// ---- attention ----------------------------------------------------------------
// One warp per query row (forward, dQ) or key row (dK, dV); lane l holds the
// head elements l, l+32, ... Causal online softmax as in FlashAttention-2
// (Dao 2023, Algorithms 1 and 2), one key at a time.

extern "C" __global__ void attn_fwd(float* o, float* lse, const float* q, const float* k, const float* v,
                                    int B, int T, int H, int KV, int HD, float scale) {
    long long wg = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / WARP;
    int lane = threadIdx.x % WARP;
    if (wg >= (long long)B * H * T) return;
    int i = wg % T;
    int h = (wg / T) % H;
    int b = wg / ((long long)T * H);
    int g = h / (H / KV);
    const float* qi = q + ((long long)(b * T + i) * H + h) * HD;
    float qr[ATTN_MAXD], acc[ATTN_MAXD];
    for (int e = 0; e < ATTN_MAXD; e++) {
        int dd = lane + e * WARP;
        qr[e] = dd < HD ? qi[dd] * scale : 0.f;
        acc[e] = 0.f;
    }
    float m = NEG_INF, l = 0.f;
    for (int j = 0; j <= i; j++) {
        const float* kj = k + ((long long)(b * T + j) * KV + g) * HD;
        const float* vj = v + ((long long)(b * T + j) * KV + g) * HD;
        float s = 0.f;
        for (int e = 0; e < ATTN_MAXD; e++) {
            int dd = lane + e * WARP;
            if (dd < HD) s += qr[e] * kj[dd];
        }
        s = warp_sum(s);
        float mn = fmaxf(m, s);
        float alpha = expf(m - mn), p = expf(s - mn);
        l = l * alpha + p;
        for (int e = 0; e < ATTN_MAXD; e++) {
            int dd = lane + e * WARP;
            if (dd < HD) acc[e] = acc[e] * alpha + p * vj[dd];
        }
        m = mn;
    }
    float inv = 1.f / l;
    float* oi = o + ((long long)(b * T + i) * H + h) * HD;
    for (int e = 0; e < ATTN_MAXD; e++) {
        int dd = lane + e * WARP;
        if (dd < HD) oi[dd] = acc[e] * inv;
    }
    if (lane == 0) lse[((long long)b * H + h) * T + i] = m + logf(l);
}

// attn_bwd_dot: D[b,h,i] = Σ_d dO·O.
extern "C" __global__ void attn_bwd_dot(float* D, const float* dout, const float* o, int B, int T, int H, int HD) {
    long long wg = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / WARP;
    int lane = threadIdx.x % WARP;
    if (wg >= (long long)B * H * T) return;
    int i = wg % T;
    int h = (wg / T) % H;
    int b = wg / ((long long)T * H);
    long long off = ((long long)(b * T + i) * H + h) * HD;
    float s = 0.f;
    for (int dd = lane; dd < HD; dd += WARP) s += dout[off + dd] * o[off + dd];
    s = warp_sum(s);
    if (lane == 0) D[((long long)b * H + h) * T + i] = s;
}

// attn_bwd_dq: dQᵢ = s·Σ_{j≤i} Pᵢⱼ(dOᵢ·Vⱼ − Dᵢ)·Kⱼ, one warp per query row.
extern "C" __global__ void attn_bwd_dq(float* dq, const float* dout, const float* q, const float* k, const float* v,
                                       const float* lse, const float* D, int B, int T, int H, int KV, int HD, float scale) {
    long long wg = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / WARP;
    int lane = threadIdx.x % WARP;
    if (wg >= (long long)B * H * T) return;
    int i = wg % T;
    int h = (wg / T) % H;
    int b = wg / ((long long)T * H);
    int g = h / (H / KV);
    long long off = ((long long)(b * T + i) * H + h) * HD;
    float qr[ATTN_MAXD], dor[ATTN_MAXD], acc[ATTN_MAXD];
    for (int e = 0; e < ATTN_MAXD; e++) {
        int dd = lane + e * WARP;
        qr[e] = dd < HD ? q[off + dd] * scale : 0.f;
        dor[e] = dd < HD ? dout[off + dd] : 0.f;
        acc[e] = 0.f;
    }
    long long row = ((long long)b * H + h) * T + i;
    float L = lse[row], Di = D[row];
    for (int j = 0; j <= i; j++) {
        const float* kj = k + ((long long)(b * T + j) * KV + g) * HD;
        const float* vj = v + ((long long)(b * T + j) * KV + g) * HD;
        float s = 0.f, dp = 0.f;
        for (int e = 0; e < ATTN_MAXD; e++) {
            int dd = lane + e * WARP;
            if (dd < HD) { s += qr[e] * kj[dd]; dp += dor[e] * vj[dd]; }
        }
        s = warp_sum(s);
        dp = warp_sum(dp);
        float p = expf(s - L);
        float ds = p * (dp - Di) * scale;
        for (int e = 0; e < ATTN_MAXD; e++) {
            int dd = lane + e * WARP;
            if (dd < HD) acc[e] += ds * kj[dd];
        }
    }
    for (int e = 0; e < ATTN_MAXD; e++) {
        int dd = lane + e * WARP;
        if (dd < HD) dq[off + dd] = acc[e];
    }
}

// attn_bwd_dkv: dKⱼ = s·Σ_h Σ_{i≥j} dSᵢⱼ·Qᵢ and dVⱼ = Σ_h Σ_{i≥j} Pᵢⱼ·dOᵢ over
// the query heads h of key/value head g, one warp per key row.
extern "C" __global__ void attn_bwd_dkv(float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                                        const float* lse, const float* D, int B, int T, int H, int KV, int HD, float scale) {
    long long wg = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / WARP;
    int lane = threadIdx.x % WARP;
    if (wg >= (long long)B * KV * T) return;
    int j = wg % T;
    int g = (wg / T) % KV;
    int b = wg / ((long long)T * KV);
    int group = H / KV;
    long long koff = ((long long)(b * T + j) * KV + g) * HD;
    float kr[ATTN_MAXD], vr[ATTN_MAXD], dka[ATTN_MAXD], dva[ATTN_MAXD];
    for (int e = 0; e < ATTN_MAXD; e++) {
        int dd = lane + e * WARP;
        kr[e] = dd < HD ? k[koff + dd] : 0.f;
        vr[e] = dd < HD ? v[koff + dd] : 0.f;
        dka[e] = 0.f;
        dva[e] = 0.f;
    }
    for (int h = g * group; h < (g + 1) * group; h++) {
        const float* Lh = lse + ((long long)b * H + h) * T;
        const float* Dh = D + ((long long)b * H + h) * T;
        for (int i = j; i < T; i++) {
            long long qoff = ((long long)(b * T + i) * H + h) * HD;
            float s = 0.f, dp = 0.f;
            for (int e = 0; e < ATTN_MAXD; e++) {
                int dd = lane + e * WARP;
                if (dd < HD) { s += q[qoff + dd] * kr[e]; dp += dout[qoff + dd] * vr[e]; }
            }
            s = warp_sum(s) * scale;
            dp = warp_sum(dp);
            float p = expf(s - Lh[i]);
            float ds = p * (dp - Dh[i]) * scale;
            for (int e = 0; e < ATTN_MAXD; e++) {
                int dd = lane + e * WARP;
                if (dd < HD) { dka[e] += ds * q[qoff + dd]; dva[e] += p * dout[qoff + dd]; }
            }
        }
    }
    for (int e = 0; e < ATTN_MAXD; e++) {
        int dd = lane + e * WARP;
        if (dd < HD) { dk[koff + dd] = dka[e]; dv[koff + dd] = dva[e]; }
    }
}

// ---- cross-entropy ----------------------------------------------------------------

extern "C" __global__ void ce_stats(float* mx, float* sumExp, float* tl, const float* logits, int rows, int lo, const int* targets) {
    int i = blockIdx.x;
    const float* z = logits + (long long)i * rows;
    float m = NEG_INF;
    for (int j = threadIdx.x; j < rows; j += blockDim.x) m = fmaxf(m, z[j]);
    m = block_max(m);
    double s = 0;
    for (int j = threadIdx.x; j < rows; j += blockDim.x) s += (double)expf(z[j] - m);
    s = block_sum_d(s);
    if (threadIdx.x == 0) {
        mx[i] = m;
        sumExp[i] = (float)s;
        int t = targets[i];
        tl[i] = (t >= 0 && t - lo >= 0 && t - lo < rows) ? z[t - lo] : 0.f;
    }
}

extern "C" __global__ void ce_bwd(float* logits, const float* gMax, const float* gSum, int rows, int lo, const int* targets, float scale) {
    int i = blockIdx.y;
    float* z = logits + (long long)i * rows;
    int t = targets[i];
    float m = gMax[i];
    float kk = (float)(1.0 / (double)gSum[i]) * scale;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < rows; j += gridDim.x * blockDim.x) {
        if (t < 0) { z[j] = 0.f; continue; }
        float val = expf(z[j] - m) * kk;
        if (j == t - lo) val -= scale;
        z[j] = val;
    }
}

// ---- AdamW ----------------------------------------------------------------

extern "C" __global__ void adamw_torch(float* w, const float* g, float* m, float* v, long long n,
                                       float b1, float b2, float eps, float stepSize, float bc2Sqrt, float decay) {
    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < n; j += (long long)gridDim.x * blockDim.x) {
        float gj = g[j];
        float mj = b1 * m[j] + (1.f - b1) * gj;
        float vj = b2 * v[j] + (1.f - b2) * gj * gj;
        m[j] = mj;
        v[j] = vj;
        float denom = sqrtf(vj) / bc2Sqrt + eps;
        w[j] = w[j] * decay - stepSize * mj / denom;
    }
}

extern "C" __global__ void adamw_hf(float* w, const float* g, float* m, float* v, long long n,
                                    float b1, float b2, float eps, float stepSize, float bc2Sqrt, float decay) {
    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < n; j += (long long)gridDim.x * blockDim.x) {
        float gj = g[j];
        float mj = b1 * m[j] + (1.f - b1) * gj;
        float vj = b2 * v[j] + (1.f - b2) * gj * gj;
        m[j] = mj;
        v[j] = vj;
        float wj = w[j] - stepSize * (mj / (sqrtf(vj) + eps));
        w[j] = wj - decay * wj;
    }
}

// ---- tiled attention (head width ≤ AT_MAXHD) ------------------------------
// The same math as the warp-per-row kernels above, with tiles of AT_TILE = 32
// keys (or queries) staged in shared memory and one key (query) per lane, so
// a softmax reduction serves 32 keys rather than one. A block of AT_WARPS
// warps owns AT_ROWS rows per warp; each output element still has exactly
// one owner that sums in a fixed order.

#define AT_TILE 32
#define AT_WARPS 4
#define AT_ROWS 4
#define AT_E 4 // elements per lane: head width ≤ 128
#define AT_MAXHD (AT_E * WARP)

// Shared memory per block (floats), mirrored in Go (attnTiledSmem):
// forward 2·32·(HD+1) + 4·HD, dQ 2·32·(HD+1) + 8·HD, dK/dV that + 64.
extern "C" __global__ void attn_fwd_tiled(float* o, float* lse, const float* q, const float* k, const float* v,
                                          int B, int T, int H, int KV, int HD, float scale) {
    extern __shared__ float smem[];
    const int HP = HD + 1;
    float* Ks = smem;                  // [AT_TILE][HP]
    float* Vs = Ks + AT_TILE * HP;     // [AT_TILE][HP]
    int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    float* qs = Vs + AT_TILE * HP + w * HD; // this warp's current query row
    int bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / KV);
    int r0 = blockIdx.x * (AT_WARPS * AT_ROWS) + w * AT_ROWS;
    int blockLast = min(T - 1, blockIdx.x * (AT_WARPS * AT_ROWS) + AT_WARPS * AT_ROWS - 1);
    float m[AT_ROWS], l[AT_ROWS], acc[AT_ROWS][AT_E];
#pragma unroll
    for (int rr = 0; rr < AT_ROWS; rr++) {
        m[rr] = NEG_INF; l[rr] = 0.f;
#pragma unroll
        for (int e = 0; e < AT_E; e++) acc[rr][e] = 0.f;
    }
    for (int j0 = 0; j0 <= blockLast; j0 += AT_TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < AT_TILE * HD; idx += blockDim.x) {
            int r = idx / HD, c = idx % HD, j = j0 + r;
            float kv = 0.f, vv = 0.f;
            if (j < T) {
                long long off = ((long long)(b * T + j) * KV + g) * HD + c;
                kv = k[off]; vv = v[off];
            }
            Ks[r * HP + c] = kv; Vs[r * HP + c] = vv;
        }
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < AT_ROWS; rr++) {
            int i = r0 + rr;
            if (i >= T || i < j0) continue; // warp-uniform
            const float* qi = q + ((long long)(b * T + i) * H + h) * HD;
            __syncwarp();
            for (int c = lane; c < HD; c += WARP) qs[c] = qi[c] * scale;
            __syncwarp();
            float s = 0.f;
            const float* kr = Ks + lane * HP;
            for (int c = 0; c < HD; c++) s += qs[c] * kr[c];
            if (j0 + lane > i) s = NEG_INF;
            float mn = fmaxf(m[rr], warp_max(s));
            float p = expf(s - mn), alpha = expf(m[rr] - mn);
            l[rr] = l[rr] * alpha + warp_sum(p);
            m[rr] = mn;
#pragma unroll
            for (int e = 0; e < AT_E; e++) acc[rr][e] *= alpha;
            for (int jj = 0; jj < AT_TILE; jj++) {
                float pj = __shfl_sync(0xffffffff, p, jj);
                const float* vr = Vs + jj * HP;
#pragma unroll
                for (int e = 0; e < AT_E; e++) {
                    int c = lane + e * WARP;
                    if (c < HD) acc[rr][e] += pj * vr[c];
                }
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < AT_ROWS; rr++) {
        int i = r0 + rr;
        if (i >= T) continue;
        float inv = 1.f / l[rr];
        float* oi = o + ((long long)(b * T + i) * H + h) * HD;
#pragma unroll
        for (int e = 0; e < AT_E; e++) {
            int c = lane + e * WARP;
            if (c < HD) oi[c] = acc[rr][e] * inv;
        }
        if (lane == 0) lse[((long long)b * H + h) * T + i] = m[rr] + logf(l[rr]);
    }
}

// attn_bwd_dq_tiled: dQᵢ = s·Σ_{j≤i} Pᵢⱼ(dOᵢ·Vⱼ − Dᵢ)·Kⱼ over key tiles.
extern "C" __global__ void attn_bwd_dq_tiled(float* dq, const float* dout, const float* q, const float* k, const float* v,
                                             const float* lse, const float* D, int B, int T, int H, int KV, int HD, float scale) {
    extern __shared__ float smem[];
    const int HP = HD + 1;
    float* Ks = smem;
    float* Vs = Ks + AT_TILE * HP;
    int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    float* qs = Vs + AT_TILE * HP + w * 2 * HD;
    float* ds_ = qs + HD; // this warp's dO row
    int bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / KV);
    int r0 = blockIdx.x * (AT_WARPS * AT_ROWS) + w * AT_ROWS;
    int blockLast = min(T - 1, blockIdx.x * (AT_WARPS * AT_ROWS) + AT_WARPS * AT_ROWS - 1);
    float acc[AT_ROWS][AT_E];
#pragma unroll
    for (int rr = 0; rr < AT_ROWS; rr++)
#pragma unroll
        for (int e = 0; e < AT_E; e++) acc[rr][e] = 0.f;
    for (int j0 = 0; j0 <= blockLast; j0 += AT_TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < AT_TILE * HD; idx += blockDim.x) {
            int r = idx / HD, c = idx % HD, j = j0 + r;
            float kv = 0.f, vv = 0.f;
            if (j < T) {
                long long off = ((long long)(b * T + j) * KV + g) * HD + c;
                kv = k[off]; vv = v[off];
            }
            Ks[r * HP + c] = kv; Vs[r * HP + c] = vv;
        }
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < AT_ROWS; rr++) {
            int i = r0 + rr;
            if (i >= T || i < j0) continue;
            long long off = ((long long)(b * T + i) * H + h) * HD;
            long long row = ((long long)b * H + h) * T + i;
            __syncwarp();
            for (int c = lane; c < HD; c += WARP) { qs[c] = q[off + c] * scale; ds_[c] = dout[off + c]; }
            __syncwarp();
            float s = 0.f, dp = 0.f;
            const float* kr = Ks + lane * HP;
            const float* vr = Vs + lane * HP;
            for (int c = 0; c < HD; c++) { s += qs[c] * kr[c]; dp += ds_[c] * vr[c]; }
            float p = (j0 + lane > i) ? 0.f : expf(s - lse[row]);
            float dsv = p * (dp - D[row]) * scale;
            for (int jj = 0; jj < AT_TILE; jj++) {
                float dj = __shfl_sync(0xffffffff, dsv, jj);
                const float* kk = Ks + jj * HP;
#pragma unroll
                for (int e = 0; e < AT_E; e++) {
                    int c = lane + e * WARP;
                    if (c < HD) acc[rr][e] += dj * kk[c];
                }
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < AT_ROWS; rr++) {
        int i = r0 + rr;
        if (i >= T) continue;
        float* di = dq + ((long long)(b * T + i) * H + h) * HD;
#pragma unroll
        for (int e = 0; e < AT_E; e++) {
            int c = lane + e * WARP;
            if (c < HD) di[c] = acc[rr][e];
        }
    }
}

// attn_bwd_dkv_tiled: dKⱼ = s·Σ_h Σ_{i≥j} dSᵢⱼ·Qᵢ and dVⱼ = Σ_h Σ_{i≥j} Pᵢⱼ·dOᵢ
// over query tiles of each query head h of key/value head g.
extern "C" __global__ void attn_bwd_dkv_tiled(float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                                              const float* lse, const float* D, int B, int T, int H, int KV, int HD, float scale) {
    extern __shared__ float smem[];
    const int HP = HD + 1;
    float* Qs = smem;                 // [AT_TILE][HP], pre-scaled
    float* Os = Qs + AT_TILE * HP;    // [AT_TILE][HP] dO
    int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    float* ks = Os + AT_TILE * HP + w * 2 * HD;
    float* vs = ks + HD;
    float* Ls = Os + AT_TILE * HP + AT_WARPS * 2 * HD; // [AT_TILE]
    float* Dsm = Ls + AT_TILE;                         // [AT_TILE]
    int bg = blockIdx.y, b = bg / KV, g = bg % KV;
    int group = H / KV;
    int k0 = blockIdx.x * (AT_WARPS * AT_ROWS);
    int r0 = k0 + w * AT_ROWS;
    float dka[AT_ROWS][AT_E], dva[AT_ROWS][AT_E];
#pragma unroll
    for (int rr = 0; rr < AT_ROWS; rr++)
#pragma unroll
        for (int e = 0; e < AT_E; e++) { dka[rr][e] = 0.f; dva[rr][e] = 0.f; }
    int i0start = (k0 / AT_TILE) * AT_TILE;
    for (int h = g * group; h < (g + 1) * group; h++) {
        for (int i0 = i0start; i0 < T; i0 += AT_TILE) {
            __syncthreads();
            for (int idx = threadIdx.x; idx < AT_TILE * HD; idx += blockDim.x) {
                int r = idx / HD, c = idx % HD, i = i0 + r;
                float qv = 0.f, ov = 0.f;
                if (i < T) {
                    long long off = ((long long)(b * T + i) * H + h) * HD + c;
                    qv = q[off] * scale; ov = dout[off];
                }
                Qs[r * HP + c] = qv; Os[r * HP + c] = ov;
            }
            for (int r = threadIdx.x; r < AT_TILE; r += blockDim.x) {
                int i = i0 + r;
                long long row = ((long long)b * H + h) * T + i;
                Ls[r] = i < T ? lse[row] : 0.f;
                Dsm[r] = i < T ? D[row] : 0.f;
            }
            __syncthreads();
#pragma unroll
            for (int rr = 0; rr < AT_ROWS; rr++) {
                int j = r0 + rr;
                if (j >= T || i0 + AT_TILE - 1 < j) continue; // every query of the tile precedes key j
                long long koff = ((long long)(b * T + j) * KV + g) * HD;
                __syncwarp();
                for (int c = lane; c < HD; c += WARP) { ks[c] = k[koff + c]; vs[c] = v[koff + c]; }
                __syncwarp();
                int i = i0 + lane;
                float s = 0.f, dp = 0.f;
                const float* qr = Qs + lane * HP;
                const float* orow = Os + lane * HP;
                for (int c = 0; c < HD; c++) { s += qr[c] * ks[c]; dp += orow[c] * vs[c]; }
                float p = (i < j || i >= T) ? 0.f : expf(s - Ls[lane]);
                float dsv = p * (dp - Dsm[lane]); // Qs carries dK's factor s
                for (int ll = 0; ll < AT_TILE; ll++) {
                    float dl = __shfl_sync(0xffffffff, dsv, ll);
                    float pl = __shfl_sync(0xffffffff, p, ll);
                    const float* qq = Qs + ll * HP;
                    const float* oo = Os + ll * HP;
#pragma unroll
                    for (int e = 0; e < AT_E; e++) {
                        int c = lane + e * WARP;
                        if (c < HD) { dka[rr][e] += dl * qq[c]; dva[rr][e] += pl * oo[c]; }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < AT_ROWS; rr++) {
        int j = r0 + rr;
        if (j >= T) continue;
        long long koff = ((long long)(b * T + j) * KV + g) * HD;
#pragma unroll
        for (int e = 0; e < AT_E; e++) {
            int c = lane + e * WARP;
            if (c < HD) { dk[koff + c] = dka[rr][e]; dv[koff + c] = dva[rr][e]; }
        }
    }
}

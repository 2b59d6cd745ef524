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
__device__ __forceinline__ unsigned short bf16_rne(float x) {
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

extern "C" __global__ void f32_to_bf16(unsigned short* dst, const float* src, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dst[i] = bf16_rne(src[i]);
}

// f32_to_bf16_2d rounds the rows × cols matrix src (leading dimension lds)
// into the rowsOut × colsOut matrix dst (leading dimension ldd), zero
// outside src: BF16 GEMM operands repacked so that every row starts 16-byte
// aligned and the inner dimension is a multiple of 8, which cuBLAS's
// tensor-core kernels want (the zeros add nothing to the products).
extern "C" __global__ void f32_to_bf16_2d(unsigned short* dst, const float* src, long long rows, int cols, long long lds,
                                          long long rowsOut, int colsOut, long long ldd) {
    for (long long r = blockIdx.y; r < rowsOut; r += gridDim.y)
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < colsOut; c += gridDim.x * blockDim.x)
            dst[r * ldd + c] = (r < rows && c < cols) ? bf16_rne(src[r * lds + c]) : (unsigned short)0;
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

// ---- tiled attention (head width ≤ 128) ------------------------------------
// The same math as the warp-per-row kernels above, blocked for the memory
// hierarchy. A block owns AT_WARPS·AT_ROWS = 32 rows (queries, or keys for
// dK/dV), kept in shared memory for the whole kernel, and walks tiles of
// AT_TILE = 32 keys (queries) staged in shared memory, one per lane: each
// lane computes its key's scores for all AT_ROWS rows of its warp at once, so
// a key element read from shared memory serves eight rows, and a softmax
// reduction serves 32 keys. Each output element still has exactly one owner
// that sums in a fixed order.
//
// AT_E, the output elements per lane, is a template parameter: 2 for head
// widths up to 64, 4 up to 128 (attn_*_tiled2 and attn_*_tiled4 below).
//
// Shared rows are padded: row tiles read by lane (lane-strided) have KP =
// QP + 1 floats per row, an odd stride free of bank conflicts; block rows
// have QP = HD rounded up to 4, read as float4 broadcasts. Pad columns are
// zero. Sizes are mirrored in Go (attnTiledSmem).

#define AT_TILE 32
#define AT_WARPS 4
#define AT_ROWS 8
#define AT_BROWS (AT_WARPS * AT_ROWS)

// at_dot4 adds the dot products of the lane's tile row t (stride KP) with
// the warp's AT_ROWS block rows r (stride QP) into s.
__device__ __forceinline__ void at_dot4(float s[AT_ROWS], const float* t, const float* r, int QP) {
    for (int c = 0; c < QP; c += 4) {
        float t0 = t[c], t1 = t[c + 1], t2 = t[c + 2], t3 = t[c + 3];
#pragma unroll
        for (int rr = 0; rr < AT_ROWS; rr++) {
            float4 x = *(const float4*)(r + rr * QP + c);
            s[rr] += x.x * t0 + x.y * t1 + x.z * t2 + x.w * t3;
        }
    }
}

// at_load_tile stages rows [row0, row0+32) of a [.., stride] tensor slice
// (element (row, c) at base + row·stride + c, rows ≥ T zero) into a padded
// tile, multiplied by mul.
__device__ __forceinline__ void at_load_tile(float* tile, int KP, const float* base, long long stride, int row0, int T, int HD, float mul) {
    int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    for (int r = w; r < AT_TILE; r += AT_WARPS) {
        int row = row0 + r;
        const float* src = base + (long long)row * stride;
        for (int c = lane; c < KP; c += WARP) tile[r * KP + c] = (c < HD && row < T) ? src[c] * mul : 0.f;
    }
}

template <int AT_E>
__device__ __forceinline__ void attn_fwd_tiled_impl(float* o, float* lse, const float* q, const float* k, const float* v,
                                          int B, int T, int H, int KV, int HD, float scale) {
    extern __shared__ float4 smem4[];
    float* smem = reinterpret_cast<float*>(smem4);
    const int QP = (HD + 3) & ~3, KP = QP + 1;
    float* Qs = smem;                  // [AT_BROWS][QP] block rows, scaled
    float* Ks = Qs + AT_BROWS * QP;    // [AT_TILE][KP]
    float* Vs = Ks + AT_TILE * KP;     // [AT_TILE][KP]
    int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    int bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / KV);
    int q0 = blockIdx.x * AT_BROWS, r0 = q0 + w * AT_ROWS;
    int blockLast = min(T - 1, q0 + AT_BROWS - 1);
    for (int r = w; r < AT_BROWS; r += AT_WARPS) {
        int i = q0 + r;
        for (int c = lane; c < QP; c += WARP) Qs[r * QP + c] = (c < HD && i < T) ? q[((long long)(b * T + i) * H + h) * HD + c] * scale : 0.f;
    }
    const float* kb = k + (long long)b * T * KV * HD + (long long)g * HD;
    const float* vb = v + (long long)b * T * KV * HD + (long long)g * HD;
    float m[AT_ROWS], l[AT_ROWS], acc[AT_ROWS][AT_E];
#pragma unroll
    for (int rr = 0; rr < AT_ROWS; rr++) {
        m[rr] = NEG_INF; l[rr] = 0.f;
#pragma unroll
        for (int e = 0; e < AT_E; e++) acc[rr][e] = 0.f;
    }
    for (int j0 = 0; j0 <= blockLast; j0 += AT_TILE) {
        __syncthreads();
        at_load_tile(Ks, KP, kb, (long long)KV * HD, j0, T, HD, 1.f);
        at_load_tile(Vs, KP, vb, (long long)KV * HD, j0, T, HD, 1.f);
        __syncthreads();
        if (r0 >= T || r0 + AT_ROWS - 1 < j0) continue; // warp-uniform: no row sees this tile
        float s[AT_ROWS], p[AT_ROWS];
#pragma unroll
        for (int rr = 0; rr < AT_ROWS; rr++) s[rr] = 0.f;
        at_dot4(s, Ks + lane * KP, Qs + w * AT_ROWS * QP, QP);
#pragma unroll
        for (int rr = 0; rr < AT_ROWS; rr++) {
            int i = r0 + rr;
            if (j0 + lane > i || i >= T) s[rr] = NEG_INF;
            float tmax = warp_max(s[rr]);
            if (tmax == NEG_INF) { p[rr] = 0.f; continue; } // warp-uniform: the row sees no key here
            float mn = fmaxf(m[rr], tmax);
            float alpha = expf(m[rr] - mn);
            p[rr] = expf(s[rr] - mn);
            l[rr] = l[rr] * alpha + warp_sum(p[rr]);
            m[rr] = mn;
#pragma unroll
            for (int e = 0; e < AT_E; e++) acc[rr][e] *= alpha;
        }
        for (int jj = 0; jj < AT_TILE; jj++) {
            float vv[AT_E];
#pragma unroll
            for (int e = 0; e < AT_E; e++) { int c = lane + e * WARP; vv[e] = c < HD ? Vs[jj * KP + c] : 0.f; }
#pragma unroll
            for (int rr = 0; rr < AT_ROWS; rr++) {
                float pj = __shfl_sync(0xffffffff, p[rr], jj);
#pragma unroll
                for (int e = 0; e < AT_E; e++) acc[rr][e] += pj * vv[e];
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
template <int AT_E>
__device__ __forceinline__ void attn_bwd_dq_tiled_impl(float* dq, const float* dout, const float* q, const float* k, const float* v,
                                             const float* lse, const float* D, int B, int T, int H, int KV, int HD, float scale) {
    extern __shared__ float4 smem4[];
    float* smem = reinterpret_cast<float*>(smem4);
    const int QP = (HD + 3) & ~3, KP = QP + 1;
    float* Qs = smem;                  // [AT_BROWS][QP] scaled
    float* Os = Qs + AT_BROWS * QP;    // [AT_BROWS][QP] dO
    float* Ks = Os + AT_BROWS * QP;    // [AT_TILE][KP]
    float* Vs = Ks + AT_TILE * KP;     // [AT_TILE][KP]
    int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    int bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / KV);
    int q0 = blockIdx.x * AT_BROWS, r0 = q0 + w * AT_ROWS;
    int blockLast = min(T - 1, q0 + AT_BROWS - 1);
    for (int r = w; r < AT_BROWS; r += AT_WARPS) {
        int i = q0 + r;
        for (int c = lane; c < QP; c += WARP) {
            bool in = c < HD && i < T;
            long long off = ((long long)(b * T + i) * H + h) * HD + c;
            Qs[r * QP + c] = in ? q[off] * scale : 0.f;
            Os[r * QP + c] = in ? dout[off] : 0.f;
        }
    }
    float L[AT_ROWS], Di[AT_ROWS], acc[AT_ROWS][AT_E];
#pragma unroll
    for (int rr = 0; rr < AT_ROWS; rr++) {
        int i = r0 + rr;
        long long row = ((long long)b * H + h) * T + i;
        L[rr] = i < T ? lse[row] : 0.f;
        Di[rr] = i < T ? D[row] : 0.f;
#pragma unroll
        for (int e = 0; e < AT_E; e++) acc[rr][e] = 0.f;
    }
    const float* kb = k + (long long)b * T * KV * HD + (long long)g * HD;
    const float* vb = v + (long long)b * T * KV * HD + (long long)g * HD;
    for (int j0 = 0; j0 <= blockLast; j0 += AT_TILE) {
        __syncthreads();
        at_load_tile(Ks, KP, kb, (long long)KV * HD, j0, T, HD, 1.f);
        at_load_tile(Vs, KP, vb, (long long)KV * HD, j0, T, HD, 1.f);
        __syncthreads();
        if (r0 >= T || r0 + AT_ROWS - 1 < j0) continue;
        float s[AT_ROWS], dp[AT_ROWS], ds[AT_ROWS];
#pragma unroll
        for (int rr = 0; rr < AT_ROWS; rr++) { s[rr] = 0.f; dp[rr] = 0.f; }
        at_dot4(s, Ks + lane * KP, Qs + w * AT_ROWS * QP, QP);
        at_dot4(dp, Vs + lane * KP, Os + w * AT_ROWS * QP, QP);
#pragma unroll
        for (int rr = 0; rr < AT_ROWS; rr++) {
            int i = r0 + rr;
            float p = (j0 + lane > i || i >= T) ? 0.f : expf(s[rr] - L[rr]);
            ds[rr] = p * (dp[rr] - Di[rr]) * scale;
        }
        for (int jj = 0; jj < AT_TILE; jj++) {
            float kk[AT_E];
#pragma unroll
            for (int e = 0; e < AT_E; e++) { int c = lane + e * WARP; kk[e] = c < HD ? Ks[jj * KP + c] : 0.f; }
#pragma unroll
            for (int rr = 0; rr < AT_ROWS; rr++) {
                float dj = __shfl_sync(0xffffffff, ds[rr], jj);
#pragma unroll
                for (int e = 0; e < AT_E; e++) acc[rr][e] += dj * kk[e];
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

// attn_bwd_dkv_tiled: dKⱼ = s·Σ_h Σ_{i≥j} dSᵢⱼ·Qᵢ and dVⱼ = Σ_h Σ_{i≥j} Pᵢⱼ·dOᵢ,
// for a block of 16 key rows of key/value head g, over the query tiles of
// each query head h of the group.
template <int AT_E>
__device__ __forceinline__ void attn_bwd_dkv_tiled_impl(float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                                              const float* lse, const float* D, int B, int T, int H, int KV, int HD, float scale) {
    extern __shared__ float4 smem4[];
    float* smem = reinterpret_cast<float*>(smem4);
    const int QP = (HD + 3) & ~3, KP = QP + 1;
    float* Kr = smem;                  // [AT_BROWS][QP] block key rows
    float* Vr = Kr + AT_BROWS * QP;    // [AT_BROWS][QP] block value rows
    float* Qs = Vr + AT_BROWS * QP;    // [AT_TILE][KP] query tile, scaled
    float* Os = Qs + AT_TILE * KP;     // [AT_TILE][KP] dO tile
    float* Ls = Os + AT_TILE * KP;     // [AT_TILE]
    float* Dsm = Ls + AT_TILE;         // [AT_TILE]
    int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    int bg = blockIdx.y, b = bg / KV, g = bg % KV, group = H / KV;
    int k0 = blockIdx.x * AT_BROWS, r0 = k0 + w * AT_ROWS;
    for (int r = w; r < AT_BROWS; r += AT_WARPS) {
        int j = k0 + r;
        for (int c = lane; c < QP; c += WARP) {
            bool in = c < HD && j < T;
            long long off = ((long long)(b * T + j) * KV + g) * HD + c;
            Kr[r * QP + c] = in ? k[off] : 0.f;
            Vr[r * QP + c] = in ? v[off] : 0.f;
        }
    }
    float dka[AT_ROWS][AT_E], dva[AT_ROWS][AT_E];
#pragma unroll
    for (int rr = 0; rr < AT_ROWS; rr++)
#pragma unroll
        for (int e = 0; e < AT_E; e++) { dka[rr][e] = 0.f; dva[rr][e] = 0.f; }
    int i0start = (k0 / AT_TILE) * AT_TILE;
    for (int h = g * group; h < (g + 1) * group; h++) {
        const float* qb = q + (long long)b * T * H * HD + (long long)h * HD;
        const float* ob = dout + (long long)b * T * H * HD + (long long)h * HD;
        for (int i0 = i0start; i0 < T; i0 += AT_TILE) {
            __syncthreads();
            at_load_tile(Qs, KP, qb, (long long)H * HD, i0, T, HD, scale);
            at_load_tile(Os, KP, ob, (long long)H * HD, i0, T, HD, 1.f);
            for (int r = threadIdx.x; r < AT_TILE; r += blockDim.x) {
                int i = i0 + r;
                long long row = ((long long)b * H + h) * T + i;
                Ls[r] = i < T ? lse[row] : 0.f;
                Dsm[r] = i < T ? D[row] : 0.f;
            }
            __syncthreads();
            if (r0 >= T || i0 + AT_TILE - 1 < r0) continue; // every query of the tile precedes the warp's keys
            float s[AT_ROWS], dp[AT_ROWS], p[AT_ROWS], ds[AT_ROWS];
#pragma unroll
            for (int rr = 0; rr < AT_ROWS; rr++) { s[rr] = 0.f; dp[rr] = 0.f; }
            at_dot4(s, Qs + lane * KP, Kr + w * AT_ROWS * QP, QP);
            at_dot4(dp, Os + lane * KP, Vr + w * AT_ROWS * QP, QP);
            int i = i0 + lane;
#pragma unroll
            for (int rr = 0; rr < AT_ROWS; rr++) {
                int j = r0 + rr;
                p[rr] = (i < j || i >= T || j >= T) ? 0.f : expf(s[rr] - Ls[lane]);
                ds[rr] = p[rr] * (dp[rr] - Dsm[lane]); // the scaled Qs carries dK's factor s
            }
            for (int ll = 0; ll < AT_TILE; ll++) {
                float qq[AT_E], oo[AT_E];
#pragma unroll
                for (int e = 0; e < AT_E; e++) {
                    int c = lane + e * WARP;
                    qq[e] = c < HD ? Qs[ll * KP + c] : 0.f;
                    oo[e] = c < HD ? Os[ll * KP + c] : 0.f;
                }
#pragma unroll
                for (int rr = 0; rr < AT_ROWS; rr++) {
                    float dl = __shfl_sync(0xffffffff, ds[rr], ll);
                    float pl = __shfl_sync(0xffffffff, p[rr], ll);
#pragma unroll
                    for (int e = 0; e < AT_E; e++) { dka[rr][e] += dl * qq[e]; dva[rr][e] += pl * oo[e]; }
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

// Instantiations: AT_E = 2 for head widths up to 64, 4 up to 128 (the
// elements of an output row each lane holds).
// Launch bounds, chosen by measurement (B=16, T=1024, 12 heads of 64, on an
// H200): the forward kernels get at most 64 registers a thread, so 8 blocks
// of 128 threads share an SM (unbounded, the compiler took 85 and 5 fit;
// 3.25 -> 2.65 ms); the backward kernels, with two sets of sums, spill badly
// at 64 and get 85 (6 blocks; unbounded they took enough for 4), which
// brought the whole step from 216 to 206 ms.
#define AT_LB_THREADS (AT_WARPS * WARP)
#define AT_LB_BLOCKS 8
#define AT_LB_BWD_BLOCKS 6
#define AT_FWD_ARGS float* o, float* lse, const float* q, const float* k, const float* v, int B, int T, int H, int KV, int HD, float scale
#define AT_BWD_ARGS const float* lse, const float* D, int B, int T, int H, int KV, int HD, float scale
extern "C" __global__ void __launch_bounds__(AT_LB_THREADS, AT_LB_BLOCKS) attn_fwd_tiled2(AT_FWD_ARGS) { attn_fwd_tiled_impl<2>(o, lse, q, k, v, B, T, H, KV, HD, scale); }
extern "C" __global__ void __launch_bounds__(AT_LB_THREADS, AT_LB_BLOCKS) attn_fwd_tiled4(AT_FWD_ARGS) { attn_fwd_tiled_impl<4>(o, lse, q, k, v, B, T, H, KV, HD, scale); }
extern "C" __global__ void __launch_bounds__(AT_LB_THREADS, AT_LB_BWD_BLOCKS) attn_bwd_dq_tiled2(float* dq, const float* dout, const float* q, const float* k, const float* v, AT_BWD_ARGS) {
    attn_bwd_dq_tiled_impl<2>(dq, dout, q, k, v, lse, D, B, T, H, KV, HD, scale);
}
extern "C" __global__ void __launch_bounds__(AT_LB_THREADS, AT_LB_BWD_BLOCKS) attn_bwd_dq_tiled4(float* dq, const float* dout, const float* q, const float* k, const float* v, AT_BWD_ARGS) {
    attn_bwd_dq_tiled_impl<4>(dq, dout, q, k, v, lse, D, B, T, H, KV, HD, scale);
}
extern "C" __global__ void __launch_bounds__(AT_LB_THREADS, AT_LB_BWD_BLOCKS) attn_bwd_dkv_tiled2(float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v, AT_BWD_ARGS) {
    attn_bwd_dkv_tiled_impl<2>(dk, dv, dout, q, k, v, lse, D, B, T, H, KV, HD, scale);
}
extern "C" __global__ void __launch_bounds__(AT_LB_THREADS, AT_LB_BWD_BLOCKS) attn_bwd_dkv_tiled4(float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v, AT_BWD_ARGS) {
    attn_bwd_dkv_tiled_impl<4>(dk, dv, dout, q, k, v, lse, D, B, T, H, KV, HD, scale);
}

// ---- tensor-core attention (BF16 precision) ----------------------------------
//
// Attention as batched cuBLAS GEMMs on bfloat16 operands (the tensor cores)
// around two float32 kernels: the matrices of one (sequence, KV head) pair
// are the group·T query rows of its query heads against its T keys, so
// grouped-query attention needs no copies of K and V, and dK, dV sum over
// the group inside the GEMM. The math is FlashAttention-2's (Dao 2023,
// arXiv 2307.08691, Algorithm 2 forward, §3.1 backward) without the tiling:
//   S = s·QKᵀ, P = exp(S − L) with L the row log-sum-exp over j ≤ i,
//   O = PV;  dV = PᵀdO, dP = dO·Vᵀ, dS = P∘(dP − D), D = rowsum(dO∘O),
//   dQ = s·dS·K, dK = s·dSᵀQ.
// Q, K, V and dO are packed to [B, heads, T, HD] bfloat16 first; results
// come back as float32 in the same layout and are unpacked.

// attn_pack_bf16: dst[b, h, t, e] = bf16(src[(b·T + t)·NH + h, e]).
extern "C" __global__ void attn_pack_bf16(unsigned short* dst, const float* src, int B, int T, int NH, int HD) {
    long long n = (long long)B * T * NH * HD;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        int e = i % HD;
        long long r = i / HD;
        int t = r % T;
        long long bh = r / T;
        int h = bh % NH;
        long long b = bh / NH;
        dst[i] = bf16_rne(src[((b * T + t) * NH + h) * HD + e]);
    }
}

// attn_unpack_f32: dst[(b·T + t)·NH + h, e] = src[b, h, t, e].
extern "C" __global__ void attn_unpack_f32(float* dst, const float* src, int B, int T, int NH, int HD) {
    long long n = (long long)B * T * NH * HD;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        int e = i % HD;
        long long r = i / HD;
        int h = r % NH;
        long long bt = r / NH;
        int t = bt % T;
        long long b = bt / T;
        dst[i] = src[((b * NH + h) * T + t) * HD + e];
    }
}

// attn_tc_softmax: one warp per score row r (query position r mod T) of S
// [rows, T]: L = log Σ_{j≤t} exp(S_j) by an online max per lane (Milakov &
// Gimelshein 2018) merged across the warp; P_j = bf16(exp(S_j − L)) for
// j ≤ t, 0 beyond (the causal mask).
extern "C" __global__ void attn_tc_softmax(unsigned short* P, float* lse, const float* S, long long rows, int T) {
    long long r = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / WARP;
    int lane = threadIdx.x % WARP;
    if (r >= rows) return;
    int t = r % T;
    const float* s = S + r * T;
    float m = NEG_INF, l = 0.f;
    for (int j = lane; j <= t; j += WARP) {
        float x = s[j];
        if (x > m) { l = l * expf(m - x) + 1.f; m = x; }
        else l += expf(x - m);
    }
    float M = warp_max(m);
    l = warp_sum(m == NEG_INF ? 0.f : l * expf(m - M));
    float L = M + logf(l);
    if (lane == 0) lse[r] = L;
    unsigned short* p = P + r * T;
    for (int j = lane; j < T; j += WARP) p[j] = j <= t ? bf16_rne(expf(s[j] - L)) : (unsigned short)0;
}

// attn_tc_dsoftmax: per score row, P = exp(S − L) and dS = P∘(dP − D) for
// j ≤ t (0 beyond), both rounded to bfloat16 for the dV, dQ and dK GEMMs.
extern "C" __global__ void attn_tc_dsoftmax(unsigned short* P, unsigned short* dS, const float* S, const float* dP,
                                            const float* lse, const float* D, long long rows, int T) {
    long long r = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / WARP;
    int lane = threadIdx.x % WARP;
    if (r >= rows) return;
    int t = r % T;
    float L = lse[r], Di = D[r];
    long long off = r * T;
    for (int j = lane; j < T; j += WARP) {
        float p = 0.f, ds = 0.f;
        if (j <= t) {
            p = expf(S[off + j] - L);
            ds = p * (dP[off + j] - Di);
        }
        P[off + j] = bf16_rne(p);
        dS[off + j] = bf16_rne(ds);
    }
}

// ---- Adam-mini ----------------------------------------------------------------

// adam_mini: one thread block per Adam-mini block of bs elements (Zhang et
// al. 2024, arXiv 2406.16793, Algorithm 1; pkg/optim/adammini.go):
//   v_b ← β2·v_b + (1−β2)·mean_{i∈b} g_i²   (Σg² in double, fixed tree)
//   m ← β1·m + (1−β1)·g
//   w ← w·decay − stepSize·m / (√v_b/bc2Sqrt + ε)
extern "C" __global__ void adam_mini(float* w, const float* g, float* m, float* v, long long bs, long long nblocks,
                                     float b1, float b2, float eps, float stepSize, float bc2Sqrt, float decay) {
    for (long long b = blockIdx.x; b < nblocks; b += gridDim.x) {
        const float* gb = g + b * bs;
        float vold = v[b];
        double sq = 0.0;
        for (long long j = threadIdx.x; j < bs; j += blockDim.x) sq += (double)gb[j] * (double)gb[j];
        sq = block_sum_d(sq);
        float vb = __fadd_rn(__fmul_rn(b2, vold), __fmul_rn(1.f - b2, (float)(sq / (double)bs)));
        if (threadIdx.x == 0) v[b] = vb;
        float denom = __fadd_rn(__fdiv_rn(sqrtf(vb), bc2Sqrt), eps);
        float* wb = w + b * bs;
        float* mb = m + b * bs;
        for (long long j = threadIdx.x; j < bs; j += blockDim.x) {
            float mj = __fadd_rn(__fmul_rn(b1, mb[j]), __fmul_rn(1.f - b1, gb[j]));
            mb[j] = mj;
            wb[j] = __fsub_rn(__fmul_rn(wb[j], decay), __fdiv_rn(__fmul_rn(stepSize, mj), denom));
        }
    }
}

// Adam-mini for blocks larger than a chunk (per-head and whole-tensor
// blocks), where one thread block per Adam-mini block would leave most SMs
// idle: Σg² by fixed chunks of C elements (adam_mini_partial), the chunks
// summed in order into v_b (adam_mini_v, one thread per block), then the
// element-wise update by chunks (adam_mini_apply).
extern "C" __global__ void adam_mini_partial(double* part, const float* g, long long bs, int nc, int C, long long total) {
    for (long long pc = blockIdx.x; pc < total; pc += gridDim.x) {
        long long b = pc / nc;
        long long lo = (pc % nc) * (long long)C, hi = min(lo + C, bs);
        const float* gb = g + b * bs;
        double sq = 0.0;
        for (long long j = lo + threadIdx.x; j < hi; j += blockDim.x) sq += (double)gb[j] * (double)gb[j];
        sq = block_sum_d(sq);
        if (threadIdx.x == 0) part[pc] = sq;
    }
}

extern "C" __global__ void adam_mini_v(float* v, const double* part, long long nblocks, int nc, long long bs, float b2) {
    for (long long b = blockIdx.x * (long long)blockDim.x + threadIdx.x; b < nblocks; b += (long long)gridDim.x * blockDim.x) {
        double sq = 0.0;
        for (int c = 0; c < nc; c++) sq += part[b * nc + c];
        v[b] = __fadd_rn(__fmul_rn(b2, v[b]), __fmul_rn(1.f - b2, (float)(sq / (double)bs)));
    }
}

extern "C" __global__ void adam_mini_apply(float* w, const float* g, float* m, const float* v, long long bs, int nc, int C,
                                           long long total, float b1, float eps, float stepSize, float bc2Sqrt, float decay) {
    for (long long pc = blockIdx.x; pc < total; pc += gridDim.x) {
        long long b = pc / nc;
        long long lo = b * bs + (pc % nc) * (long long)C, hi = min(lo + C, (b + 1) * bs);
        float denom = __fadd_rn(__fdiv_rn(sqrtf(v[b]), bc2Sqrt), eps);
        for (long long j = lo + threadIdx.x; j < hi; j += blockDim.x) {
            float mj = __fadd_rn(__fmul_rn(b1, m[j]), __fmul_rn(1.f - b1, g[j]));
            m[j] = mj;
            w[j] = __fsub_rn(__fmul_rn(w[j], decay), __fdiv_rn(__fmul_rn(stepSize, mj), denom));
        }
    }
}

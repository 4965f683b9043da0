// The AVX-512 VNNI multiply peak of one core: 12 independent `vpdpbusd zmm` chains (more than
// latency x throughput), written in assembly so that no compiler merges them, and a dependent
// chain of scalar adds (1 a cycle) for the clock.
//   gcc -O2 -mavx512f -mavx512bw -mavx512vnni bench/vnni-peak.c -o /tmp/vnni-peak && /tmp/vnni-peak
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define DP(r) "vpdpbusd %[b], %[a], %%zmm" #r "\n\t"

int main(void) {
    __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x01010101);
    const long n = 200000000;
    double t = now();
    for (long i = 0; i < n; i++) {
        __asm__ volatile(DP(16) DP(17) DP(18) DP(19) DP(20) DP(21) DP(22) DP(23) DP(24) DP(25)
                             DP(26) DP(27)
                         :
                         : [a] "v"(a), [b] "v"(b)
                         : "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",
                           "xmm23", "xmm24", "xmm25", "xmm26", "xmm27");
    }
    t = now() - t;
    long x = 0;
    double u = now();
    for (long i = 0; i < 1000000000; i++) __asm__ volatile("add $1, %0" : "+r"(x));
    u = now() - u;
    double ghz = 1.0 / u, per_s = 12.0 * n / t;
    printf("%.2f G vpdpbusd/s = %.1f GMAC/s; clock %.2f GHz: %.2f vpdpbusd a cycle\n",
           per_s / 1e9, per_s * 64 / 1e9, ghz, per_s / 1e9 / ghz);
    return 0;
}

// The AVX-512 VNNI multiply peak of one core: 12 independent `vpdpbusd zmm` chains (more than
// latency x throughput), and a dependent chain of scalar adds (1 a cycle) for the clock.
//   gcc -O2 -mavx512f -mavx512bw -mavx512vnni bench/vnni-peak.c -o /tmp/vnni-peak && /tmp/vnni-peak
// Session 30 (Intel Xeon, family 6 model 207): 2.04 vpdpbusd a cycle at 2.98 GHz = 390 GMAC/s.
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x01010101);
    __m512i c[12];
    for (int k = 0; k < 12; k++) c[k] = _mm512_setzero_si512();
    const long n = 200000000;
    double t = now();
    for (long i = 0; i < n; i++) {
#pragma GCC unroll 12
        for (int k = 0; k < 12; k++) c[k] = _mm512_dpbusd_epi32(c[k], a, b);
        __asm__ volatile("" : "+v"(a));
    }
    t = now() - t;
    __m512i s = c[0];
    for (int k = 1; k < 12; k++) s = _mm512_add_epi32(s, c[k]);
    long x = 0;
    double u = now();
    for (long i = 0; i < 1000000000; i++) __asm__ volatile("add $1, %0" : "+r"(x));
    u = now() - u;
    double ghz = 1.0 / u, per_s = 12.0 * n / t;
    printf("(checksum %d) %.2f G vpdpbusd/s = %.1f GMAC/s; clock %.2f GHz: %.2f vpdpbusd a cycle\n",
           _mm512_reduce_add_epi32(s) & 1, per_s / 1e9, per_s * 64 / 1e9, ghz, per_s / 1e9 / ghz);
    return 0;
}

// Read bandwidth: sum a 1 GiB float array with OMP_NUM_THREADS threads, best of 5 passes. Plain C
// with 16 independent sums (so the add latency is not the limit); -O3 -march=native vectorises it.
//   gcc -O3 -march=native -fopenmp tools/bandwidth.c -o /tmp/bandwidth && OMP_NUM_THREADS=2 /tmp/bandwidth
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    size_t n = (size_t)1 << 28;  // 2^28 floats = 1 GiB
    float *a = aligned_alloc(64, n * sizeof(float));
    if (!a) return 1;
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023);
    double best = 1e9, sink = 0;
    for (int r = 0; r < 5; r++) {
        double t = omp_get_wtime(), total = 0;
        #pragma omp parallel reduction(+:total)
        {
            float acc[16] = {0};
            #pragma omp for
            for (size_t i = 0; i < n; i += 16)
                for (int k = 0; k < 16; k++) acc[k] += a[i + k];
            for (int k = 0; k < 16; k++) total += acc[k];
        }
        t = omp_get_wtime() - t;
        sink += total;
        if (t < best) best = t;
    }
    printf("%d threads: read %.1f GB/s (best of 5 passes over 1 GiB) [%g]\n", omp_get_max_threads(),
           n * sizeof(float) / best / 1e9, sink);
    return 0;
}

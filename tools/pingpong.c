// How far apart two CPUs are: a cache line passed back and forth between a thread pinned to CPU
// 0 and one pinned to CPU 1, 200,000 times; prints the mean round trip. On a 2-vCPU KVM Zen 3
// EPYC it read ~100 ns (the vCPUs on cores sharing an L3) or ~450 ns (not), changing from one
// second to the next; see the README (Benchmarks).
//   gcc -O2 -o /tmp/pingpong tools/pingpong.c -lpthread && /tmp/pingpong
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#define ROUNDS 200000

static _Atomic int turn __attribute__((aligned(64)));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *answer(void *unused) {
    (void)unused;
    pin(1);
    for (int i = 0; i < ROUNDS; i++) {
        while (atomic_load(&turn) != 2 * i + 1) {
        }
        atomic_store(&turn, 2 * i + 2);
    }
    return NULL;
}

int main(void) {
    pthread_t other;
    pthread_create(&other, NULL, answer, NULL);
    pin(0);
    double start = now();
    for (int i = 0; i < ROUNDS; i++) {
        atomic_store(&turn, 2 * i + 1);
        while (atomic_load(&turn) != 2 * i + 2) {
        }
    }
    double seconds = now() - start;
    pthread_join(other, NULL);
    printf("round trip %.0f ns\n", seconds / ROUNDS * 1e9);
    return 0;
}

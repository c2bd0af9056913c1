/* gimc: the driver. */
#include <stdio.h>

int main(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "gimc: not yet built\n");
    return 2;
}

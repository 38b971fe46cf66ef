/* t-empty.c - an empty preload library for t-spank-stepd.sh. */
int phos_t_empty;

/* Test-only shim for Wine 8.0, which lacks bcryptprimitives.dll's ProcessPrng (Rust's std on
 * Windows takes its random bytes from it). Windows 10+ has the real DLL; nothing here ships.
 * Built by tests/src/wine.rs with x86_64-w64-mingw32-gcc and placed beside the .exe under test. */
#include <windows.h>
#include <ntsecapi.h>

BOOL WINAPI ProcessPrng(PBYTE out, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(out, chunk))
            return FALSE;
        out += chunk;
        len -= chunk;
    }
    return TRUE;
}

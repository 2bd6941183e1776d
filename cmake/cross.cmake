# Cross-building on a Debian amd64 machine for a Raspberry Pi, with Debian's
# cross toolchains and the target's multiarch -dev packages (./test.sh
# --cross ARCH installs them).  The target's binaries run under qemu-user,
# which ctest uses as the emulator for the unit tests.
#
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/cross.cmake -DFERRY_CROSS_ARCH=arm64
#
# FERRY_CROSS_ARCH is a Debian architecture: arm64 (64-bit Raspberry Pi OS)
# or armhf (32-bit).  dpkg-buildpackage -a ARCH needs none of this: debhelper
# passes the same settings itself.
set(FERRY_CROSS_ARCH "arm64" CACHE STRING "Debian architecture to build for: arm64 or armhf")
if(FERRY_CROSS_ARCH STREQUAL "arm64")
  set(_triplet aarch64-linux-gnu)
  set(CMAKE_SYSTEM_PROCESSOR aarch64)
  set(_qemu qemu-aarch64)
elseif(FERRY_CROSS_ARCH STREQUAL "armhf")
  set(_triplet arm-linux-gnueabihf)
  set(CMAKE_SYSTEM_PROCESSOR arm)
  set(_qemu qemu-arm)
else()
  message(FATAL_ERROR "FERRY_CROSS_ARCH must be arm64 or armhf, not \"${FERRY_CROSS_ARCH}\"")
endif()
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${_triplet}-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE ${_triplet})
# the target's .pc files, from its multiarch dir only
set(PKG_CONFIG_EXECUTABLE ${_triplet}-pkg-config CACHE FILEPATH "pkg-config for the target")
# the dynamic loader and libraries come from the multiarch dirs, which qemu
# finds through the loader's own search path
set(CMAKE_CROSSCOMPILING_EMULATOR ${_qemu})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)

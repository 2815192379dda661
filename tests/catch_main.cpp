// The one Catch2 main shared by every test executable (built once as tessera_catch_main).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

// io_error: what tessera's file readers and writers (IDX data sets, checkpoints) throw.
#pragma once
#include <stdexcept>
#include <string>

namespace tessera {

/// A file could not be read or written, or its content is not what it should be (missing, truncated, corrupt,
/// of the wrong kind or shape). The message names the file and says what is wrong.
class io_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace tessera

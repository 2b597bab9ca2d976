// Subcommands of the `vdma` command. Each lives in its own file and adds itself to the
// top-level CLI::App; main.cc runs the one the user named.
//
//   // tools/demo_command.cc
//   Subcommand add_demo_command(CLI::App& app) {
//     CLI::App* sub = app.add_subcommand("demo", "Run the driver/device demo");
//     auto opts = std::make_shared<DemoOptions>();
//     sub->add_option("--platform", opts->platform, "...");
//     return {sub, [opts] { return run_demo(*opts); }};
//   }
//   // and one line in main.cc's kCommands.
//
// Exit codes: 0 success, 1 runtime failure, 2 usage error (kExitUsage).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace vdma::tools {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

struct Subcommand {
  CLI::App* app = nullptr;   // parsed() tells whether the user chose it
  std::function<int()> run;  // runs it after a successful parse; returns the exit code
};

// `vdma blk`: the vhost-user virtio-blk back end (blk_command.cc).
Subcommand add_blk_command(CLI::App& app);

// Prints "vdma <command>: <message>" and a hint to --help on stderr; returns kExitUsage.
int usage_error(const CLI::App& command, const std::string& message);

}  // namespace vdma::tools

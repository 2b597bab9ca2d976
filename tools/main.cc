// vdma: the virtio-dma command line. `vdma <command> --help` for each command.
#include <cstdio>
#include <vector>

#include "command.h"

namespace vdma::tools {

int usage_error(const CLI::App& command, const std::string& message) {
  std::fprintf(stderr, "vdma %s: %s\nRun 'vdma %s --help' for the options.\n",
               command.get_name().c_str(), message.c_str(), command.get_name().c_str());
  return kExitUsage;
}

}  // namespace vdma::tools

int main(int argc, char** argv) {
  using namespace vdma::tools;
  CLI::App app{
      "virtio-dma: a user-space virtio stack in which every driver buffer goes through a DMA "
      "API.",
      "vdma"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show the help of every command");
  std::vector<Subcommand> commands{add_blk_command(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help or the error
    return code == 0 ? kExitOk : kExitUsage;
  }
  for (const Subcommand& c : commands) {
    if (c.app->parsed()) return c.run();
  }
  return kExitUsage;
}
